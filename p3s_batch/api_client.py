"""A client for ComfyUI's HTTP API on httpx, its websocket on websockets, retries on tenacity.

Idempotent requests (GET, uploads under a content name) are retried on connection errors with
exponential backoff; ``POST /prompt`` only when the connection was never made, so a prompt is
never queued twice by a retry. The end of a prompt comes from the websocket (``executing`` with
``node: null``, sent after the history entry is stored), not from polling ``/history``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection, connect

TRANSIENT = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.PoolTimeout)
"""Connection failures worth a second try; a read timeout is not one (the server may be working)."""
NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout)


class ComfyAPIError(RuntimeError):
    """The server refused a request or a prompt failed; ``body`` is the answer's JSON, if any."""

    def __init__(self, message: str, body: Any = None, status: int | None = None):
        super().__init__(message)
        self.body = body
        self.status = status


class ServerUnreachable(ConnectionError):
    """The server did not answer (refused, reset, closed, timed out): its fault, not the prompt's."""


@dataclass
class PromptResult:
    """The end of one queued prompt: its history entry."""

    prompt_id: str
    history: dict[str, Any]

    @property
    def succeeded(self) -> bool:
        return self.history.get("status", {}).get("status_str") == "success"

    @property
    def error(self) -> dict[str, Any] | None:
        """The ``execution_error`` message (node_type, exception_message, ...) when it failed."""
        for kind, data in self.history.get("status", {}).get("messages", []):
            if kind == "execution_error":
                return data
        return None

    @property
    def interrupted(self) -> bool:
        """True when the prompt was stopped by ``POST /interrupt`` (or Cancel)."""
        return any(kind == "execution_interrupted" for kind, _ in self.history.get("status", {}).get("messages", []))

    def output_images(self, node_id: str) -> list[dict[str, str]]:
        """The ``{filename, subfolder, type}`` records of the images a node produced."""
        return self.history.get("outputs", {}).get(str(node_id), {}).get("images", [])

    def output_files(self) -> list[tuple[str, dict[str, str]]]:
        """Every file record of every node's outputs (images, gifs, ...), as ``(node_id, record)``."""
        files = []
        for node_id, outputs in self.history.get("outputs", {}).items():
            for records in outputs.values():
                if isinstance(records, list):
                    files += [(node_id, r) for r in records if isinstance(r, dict) and "filename" in r]
        return files


def _json(body: Any) -> dict[str, Any]:
    """A JSON request body as ComfyUI's own frontend sends it: NaN and Infinity as JSON's literals
    (httpx's ``json=`` refuses them, and a NaN input must reach the node that reports it)."""
    return {"content": json.dumps(body).encode(), "headers": {"Content-Type": "application/json"}}


def _finished(entry: dict[str, Any] | None) -> bool:
    status = (entry or {}).get("status", {})
    return status.get("completed") is not None and status.get("status_str") in ("success", "error")


class ComfyClient:
    """Queue prompts, wait for them on the websocket, fetch outputs."""

    def __init__(self, url: str, client_id: str | None = None, timeout: float = 30.0, retries: int = 3):
        self.url = url.rstrip("/")
        self.client_id = client_id or uuid.uuid4().hex
        self.timeout = timeout
        self._http = httpx.Client(base_url=self.url, timeout=timeout, trust_env=False)
        self._retries = retries

    def close(self) -> None:
        self._http.close()

    def _retrying(self, kinds: tuple[type[BaseException], ...]) -> Retrying:
        return Retrying(
            retry=retry_if_exception_type(kinds),
            stop=stop_after_attempt(self._retries),
            wait=wait_exponential(multiplier=0.2, max=2.0),
            reraise=True,
        )

    def _send(
        self, method: str, path: str, retry_on: tuple[type[BaseException], ...] = TRANSIENT, **kwargs: Any
    ) -> httpx.Response:
        try:
            for attempt in self._retrying(retry_on):
                with attempt:
                    response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"{self.url}{path}: {type(exc).__name__}: {exc or 'no answer'}") from None
        if response.is_error:
            try:
                body = response.json()
            except ValueError:
                body = None
            raise ComfyAPIError(f"{path}: HTTP {response.status_code}: {response.text}", body, response.status_code)
        return response

    def get_json(self, path: str) -> Any:
        return self._send("GET", path).json()

    def get_bytes(self, path: str) -> bytes:
        """GET ``path`` (a file the server serves); its body."""
        return self._send("GET", path).content

    def post_json(self, path: str, body: Any) -> Any:
        """POST ``body`` as JSON to ``path``; the answer's JSON (None when it has none)."""
        response = self._send("POST", path, retry_on=NEVER_SENT, **_json(body))
        try:
            return response.json()
        except ValueError:
            return None

    def object_info(self) -> dict[str, Any]:
        return self.get_json("/object_info")

    def alive(self) -> bool:
        """True when the server answers ``/queue`` (cheap) within the client's timeout."""
        try:
            self._send("GET", "/queue", retry_on=())
        except (ServerUnreachable, ComfyAPIError):
            return False
        return True

    def submit(self, prompt: dict[str, Any], prompt_id: str | None = None) -> dict[str, Any]:
        """POST /prompt; returns the answer: ``prompt_id`` and ``node_errors``.

        ComfyUI queues a prompt when at least one output node is valid, and lists the invalid
        nodes in ``node_errors``; when none is valid it refuses (:class:`ComfyAPIError`). A given
        ``prompt_id`` is used as the prompt's id (ComfyUI takes it from the request).
        """
        body: dict[str, Any] = {"prompt": prompt, "client_id": self.client_id}
        if prompt_id:
            body["prompt_id"] = prompt_id
        return self._send("POST", "/prompt", retry_on=NEVER_SENT, **_json(body)).json()

    def queue(self, prompt: dict[str, Any]) -> str:
        """POST /prompt; returns the prompt id (validation errors raise :class:`ComfyAPIError`)."""
        return self.submit(prompt)["prompt_id"]

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The history entry of a prompt, or None while it is queued, running or unknown."""
        return self.get_json(f"/history/{prompt_id}").get(prompt_id)

    def queued(self, prompt_id: str) -> bool:
        """True when the prompt is running or waiting in the server's queue."""
        queue = self.get_json("/queue")
        return any(
            len(item) > 1 and item[1] == prompt_id
            for key in ("queue_running", "queue_pending")
            for item in queue.get(key, [])
        )

    def wait(
        self,
        prompt_id: str,
        timeout: float = 600.0,
        events: EventStream | None = None,
        on_message: Callable[[dict[str, Any]], None] | None = None,
    ) -> PromptResult:
        """Wait on the websocket for the prompt's end and return its history entry.

        Pass the ``events`` opened before queueing (otherwise one is opened here and the
        history is checked once, for a prompt that ended before). Every message about this
        prompt goes to ``on_message`` (progress bars). After 15 s without a message the history
        is checked once, in case the end was missed. Raises :class:`TimeoutError` past
        ``timeout`` and :class:`ServerUnreachable` when the connection is lost.
        """
        own = events is None
        stream = events or self.events()
        deadline = time.monotonic() + timeout
        try:
            if own and _finished(entry := self.history(prompt_id)):
                return PromptResult(prompt_id, entry)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:g} s")
                message = stream.next_message(timeout=min(left, 15.0))
                if message is None:
                    if time.monotonic() >= deadline:
                        continue  # past the timeout: said above, without asking a server that may hang
                    if _finished(entry := self.history(prompt_id)):
                        return PromptResult(prompt_id, entry)
                    continue
                data = message.get("data") or {}
                if data.get("prompt_id") != prompt_id:
                    continue
                if on_message:
                    on_message(message)
                if message.get("type") == "executing" and data.get("node") is None:
                    return self._ended(prompt_id)
        finally:
            if own:
                stream.close()

    def _ended(self, prompt_id: str) -> PromptResult:
        """The history entry right after the end message (stored before it is sent; checked again briefly)."""
        settle = Retrying(
            retry=retry_if_exception_type(LookupError),
            stop=stop_after_attempt(5),
            wait=wait_exponential(0.05),
            reraise=True,
        )
        for attempt in settle:
            with attempt:
                entry = self.history(prompt_id)
                if not _finished(entry):
                    raise LookupError(f"prompt {prompt_id} ended but has no finished history entry")
        return PromptResult(prompt_id, entry)

    def run(self, prompt: dict[str, Any], timeout: float = 600.0) -> PromptResult:
        """Queue a prompt and wait for its end."""
        with self.events() as events:
            return self.wait(self.queue(prompt), timeout=timeout, events=events)

    def interrupt(self) -> None:
        self._send("POST", "/interrupt", json={})

    def cancel(self, prompt_id: str) -> None:
        """Drop a prompt from the queue, or stop it if it is running (other prompts are left alone)."""
        self._send("POST", "/queue", json={"delete": [prompt_id]})
        self._send("POST", "/interrupt", json={"prompt_id": prompt_id})

    def events(self, timeout: float | None = None) -> EventStream:
        """The server's websocket messages for this client (progress, executing, ...); open it before queueing."""
        return EventStream(self.url, self.client_id, timeout or self.timeout)

    def view(self, image: dict[str, str]) -> bytes:
        """GET /view for an output record."""
        return self._send("GET", "/view", params=image).content

    def upload_image(self, path: Path, overwrite: bool = True, name: str | None = None) -> str:
        """POST /upload/image (under ``name``, default the file's name); returns the name to give LoadImage."""
        return self.upload_bytes(Path(path).read_bytes(), name or Path(path).name, overwrite)

    def upload_bytes(self, data: bytes, name: str, overwrite: bool = True) -> str:
        """POST /upload/image of ``data`` under ``name``; returns the name to give LoadImage."""
        answer = self._send(
            "POST",
            "/upload/image",
            files={"image": (name, data, "application/octet-stream")},
            data={"overwrite": str(overwrite).lower()},
        ).json()
        return answer["name"] if not answer.get("subfolder") else f"{answer['subfolder']}/{answer['name']}"


BINARY_TEXT = (3).to_bytes(4, "big")
"""ComfyUI's binary event type of node text (``BinaryEventTypes.TEXT``)."""


class EventStream:
    """The messages of ``/ws?clientId=...`` (websockets' client).

    ComfyUI sends ``progress``, ``executing``, ``executed``, ``execution_*`` and ``status``
    messages as JSON text frames. Of its binary frames, the text a node shows under itself
    (``send_progress_text``) becomes ``{"type": "progress_text", "data": {"node", "text"}}``;
    previews are skipped. Use as a context manager; :meth:`wait_for` returns the first message
    that matches.
    """

    def __init__(self, url: str, client_id: str, timeout: float = 30.0):
        ws_url = "ws" + url.removeprefix("http") + f"/ws?clientId={client_id}"
        self.timeout = timeout
        try:
            self._opening = connect(
                ws_url, open_timeout=timeout, proxy=None, compression=None, max_size=None, ping_interval=None
            )
            self._ws: ClientConnection = self._opening.__enter__()
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            raise ServerUnreachable(f"{url}/ws: {type(exc).__name__}: {exc}") from None

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._opening.__exit__(None, None, None)

    def next_message(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next JSON message (``{"type": ..., "data": ...}``), or None when none came within ``timeout``
        (default the stream's)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            try:
                frame = self._ws.recv(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return None
            except ConnectionClosed as exc:
                raise ServerUnreachable(f"/ws: the server closed the connection ({exc})") from None
            if isinstance(frame, str):
                return json.loads(frame)
            if frame[:4] == BINARY_TEXT:
                size = int.from_bytes(frame[4:8], "big")
                node, text = frame[8 : 8 + size].decode(), frame[8 + size :].decode(errors="replace")
                return {"type": "progress_text", "data": {"node": node, "text": text}}

    def wait_for(self, kind: str, timeout: float, **data: Any) -> dict[str, Any]:
        """The first ``kind`` message whose data has the given values, e.g. ``wait_for("progress", 60, node="7")``."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.next_message(timeout=left)
            if message is None:
                break
            body = message.get("data") or {}
            if message.get("type") == kind and all(body.get(k) == v for k, v in data.items()):
                return message
        raise TimeoutError(f"no {kind!r} message with {data} within {timeout:.0f} s")
