"""A small client for ComfyUI's HTTP API (standard library only)."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ComfyAPIError(RuntimeError):
    """The server refused a request or a prompt failed; ``body`` is the answer's JSON, if any."""

    def __init__(self, message: str, body: Any = None):
        super().__init__(message)
        self.body = body


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


class ComfyClient:
    """Queue prompts, wait for them, fetch outputs."""

    def __init__(self, url: str, client_id: str | None = None, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.client_id = client_id or uuid.uuid4().hex
        self.timeout = timeout

    def _request(self, path: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> bytes:
        request = urllib.request.Request(self.url + path, data=data, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            try:
                body = json.loads(text)
            except ValueError:
                body = None
            raise ComfyAPIError(f"{path}: HTTP {exc.code}: {text}", body) from None

    def get_json(self, path: str) -> Any:
        return json.loads(self._request(path))

    def object_info(self) -> dict[str, Any]:
        return self.get_json("/object_info")

    def submit(self, prompt: dict[str, Any]) -> dict[str, Any]:
        """POST /prompt; returns the answer: ``prompt_id`` and ``node_errors``.

        ComfyUI queues a prompt when at least one output node is valid, and lists the invalid
        nodes in ``node_errors``; when none is valid it refuses (:class:`ComfyAPIError`).
        """
        body = json.dumps({"prompt": prompt, "client_id": self.client_id}).encode()
        return json.loads(self._request("/prompt", body, {"Content-Type": "application/json"}))

    def queue(self, prompt: dict[str, Any]) -> str:
        """POST /prompt; returns the prompt id (validation errors raise :class:`ComfyAPIError`)."""
        return self.submit(prompt)["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600.0, poll: float = 0.25) -> PromptResult:
        """Poll /history until the prompt has finished (successfully or not)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get_json(f"/history/{prompt_id}")
            entry = history.get(prompt_id)
            if (
                entry
                and entry.get("status", {}).get("completed") is not None
                and (entry["status"].get("status_str") in ("success", "error"))
            ):
                return PromptResult(prompt_id, entry)
            time.sleep(poll)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")

    def run(self, prompt: dict[str, Any], timeout: float = 600.0) -> PromptResult:
        """Queue a prompt and wait for its end."""
        return self.wait(self.queue(prompt), timeout=timeout)

    def interrupt(self) -> None:
        self._request("/interrupt", b"", {"Content-Type": "application/json"})

    def cancel(self, prompt_id: str) -> None:
        """Drop a prompt from the queue, or stop it if it is running (other prompts are left alone)."""
        headers = {"Content-Type": "application/json"}
        self._request("/queue", json.dumps({"delete": [prompt_id]}).encode(), headers)
        self._request("/interrupt", json.dumps({"prompt_id": prompt_id}).encode(), headers)

    def events(self, timeout: float | None = None) -> EventStream:
        """The server's websocket messages for this client (progress, executing, ...); open it before queueing."""
        return EventStream(self.url, self.client_id, timeout or self.timeout)

    def view(self, image: dict[str, str]) -> bytes:
        """GET /view for an output record."""
        return self._request("/view?" + urllib.parse.urlencode(image))

    def upload_image(self, path: Path, overwrite: bool = True, name: str | None = None) -> str:
        """POST /upload/image (under ``name``, default the file's name); returns the name to give LoadImage."""
        boundary = uuid.uuid4().hex
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="overwrite"\r\n\r\n{str(overwrite).lower()}\r\n',
        ]
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name or Path(path).name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        body = "".join(parts).encode() + head.encode() + Path(path).read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        answer = json.loads(
            self._request("/upload/image", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        )
        return answer["name"] if not answer.get("subfolder") else f"{answer['subfolder']}/{answer['name']}"


BINARY_TEXT = (3).to_bytes(4, "big")
"""ComfyUI's binary event type of node text (``BinaryEventTypes.TEXT``)."""


class EventStream:
    """A minimal websocket reader of ``/ws?clientId=...`` (text frames as JSON messages).

    ComfyUI sends ``progress``, ``executing``, ``executed``, ``execution_*`` and ``status``
    messages as JSON text frames. Of its binary frames, the text a node shows under itself
    (``send_progress_text``) becomes ``{"type": "progress_text", "data": {"node", "text"}}``;
    previews are skipped. Use as a context manager; :meth:`wait_for` returns the first message
    that matches.
    """

    def __init__(self, url: str, client_id: str, timeout: float = 30.0):
        parsed = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((parsed.hostname, parsed.port or 80), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /ws?clientId={urllib.parse.quote(client_id)} HTTP/1.1\r\nHost: {parsed.netloc}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ComfyAPIError("/ws: the server closed the connection during the handshake")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ComfyAPIError(f"/ws: no websocket upgrade: {head.decode(errors='replace')}")

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def _read(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise ComfyAPIError("/ws: the server closed the connection")
            data += chunk
        return data

    def next_message(self) -> dict[str, Any]:
        """The next JSON message (``{"type": ..., "data": ...}``); waits up to the stream's timeout."""
        while True:
            first, second = self._read(2)
            opcode, length = first & 0x0F, second & 0x7F
            if length == 126:
                length = int.from_bytes(self._read(2), "big")
            elif length == 127:
                length = int.from_bytes(self._read(8), "big")
            mask = self._read(4) if second & 0x80 else b""
            payload = self._read(length)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x8:
                raise ComfyAPIError("/ws: the server closed the websocket")
            if opcode == 0x9:  # ping: answer with a masked pong carrying the same payload
                pong_mask = os.urandom(4)
                masked = bytes(b ^ pong_mask[i % 4] for i, b in enumerate(payload))
                self.sock.sendall(bytes([0x8A, 0x80 | len(payload)]) + pong_mask + masked)
            elif opcode == 0x1 and first & 0x80:
                return json.loads(payload)
            elif opcode == 0x2 and first & 0x80 and payload[:4] == BINARY_TEXT:
                size = int.from_bytes(payload[4:8], "big")
                node, text = payload[8 : 8 + size].decode(), payload[8 + size :].decode(errors="replace")
                return {"type": "progress_text", "data": {"node": node, "text": text}}

    def wait_for(self, kind: str, timeout: float, **data: Any) -> dict[str, Any]:
        """The first ``kind`` message whose data has the given values, e.g. ``wait_for("progress", 60, node="7")``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                message = self.next_message()
            except TimeoutError:
                break
            body = message.get("data") or {}
            if message.get("type") == kind and all(body.get(k) == v for k, v in data.items()):
                return message
        raise TimeoutError(f"no {kind!r} message with {data} within {timeout:.0f} s")
