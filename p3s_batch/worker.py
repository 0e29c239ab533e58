"""One ComfyUI server as a batch worker: the code that runs an item, shared by both engines.

The default engine runs a :class:`ServerWorker` per server in a thread of the driver; the Ray
engine runs the same class as a Ray actor (one per server, on whichever node holds it). A
worker either talks to a server given by URL or owns one it launched (:mod:`p3s_batch.comfy_process`).

:meth:`ServerWorker.run_item` runs one item to its end on this server and returns an
:class:`Outcome`: ``success`` with the output files' bytes (fetched through ``/view``, so the
driver needs no shared disk), ``failed`` with the error once the item's own retries are spent
(tenacity, exponential backoff), or ``server_lost`` when the server stopped answering (refused,
reset, websocket closed, no answer to the cancel of a prompt past ``--timeout``): then the item
is not the worker's to finish, the driver gives it to a server that answers.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from p3s_batch.api_client import ComfyAPIError, ComfyClient, PromptResult, ServerUnreachable, _finished
from p3s_batch.comfy_process import ComfyProcess, LaunchError, LaunchSpec
from p3s_batch.items import BatchItem, build_prompt
from p3s_batch.ledger import FAILED, SERVER_LOST, SUCCESS


class ItemFailed(RuntimeError):
    """The server ran (or refused) the prompt and reported an error; ``final``: retrying cannot help."""

    def __init__(self, message: str, final: bool = False):
        super().__init__(message)
        self.final = final


@dataclass
class WorkerSettings:
    retries: int = 2
    backoff: float = 2.0
    timeout: float = 600.0
    server_wait: float = 60.0
    """Seconds :meth:`ServerWorker.recover` waits for a lost server to answer again."""
    http_timeout: float = 15.0
    """Seconds one HTTP request may go unanswered before the server counts as lost."""


@dataclass
class WorkItem:
    """What the driver sends a worker: the item, its images' bytes, the prompt id of this dispatch."""

    item: BatchItem
    images: dict[str, bytes]
    prompt_id: str
    adopt: bool = False
    """The same prompt id was handed to this server by an earlier driver: take its result if it has one."""


@dataclass
class Outcome:
    item_id: str
    status: str
    server: str
    attempts: list[dict[str, Any]] = field(default_factory=list)
    files: list[tuple[str, bytes]] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0


@dataclass
class ServerInfo:
    name: str
    url: str
    host: str
    pid: int | None


def error_text(result: PromptResult) -> str:
    error = result.error
    if not error:
        if result.interrupted:
            return "the prompt was interrupted on the server"
        return f"prompt ended with status {result.history.get('status', {}).get('status_str')!r}"
    return f"{error.get('node_type')} (node {error.get('node_id')}): {error.get('exception_message', '').strip()}"


def node_errors_text(node_errors: dict[str, Any]) -> str:
    return "; ".join(
        f"node {node_id} ({entry.get('class_type')}): {error.get('message')} {error.get('details', '')}".strip()
        for node_id, entry in node_errors.items()
        for error in entry.get("errors", [])
    )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class ServerWorker:
    """One ComfyUI server: given by ``url``, or launched from ``launch`` (then owned: started,
    restarted after a crash, stopped at :meth:`close`)."""

    def __init__(
        self,
        name: str,
        workflow: dict[str, Any],
        settings: WorkerSettings,
        url: str | None = None,
        launch: LaunchSpec | None = None,
        gpu: bool = False,
        client_key: str = "",
    ):
        if (url is None) == (launch is None):
            raise ValueError("a worker needs either a server url or a launch spec")
        self.name, self.workflow, self.settings = name, workflow, settings
        self.process = ComfyProcess(launch, f"{client_key}-{name}", gpu) if launch else None
        self._url = url
        self._client_key = client_key
        self.client: ComfyClient | None = None
        self._uploaded: dict[str, str] = {}
        self._progress: dict[str, Any] | None = None

    @property
    def url(self) -> str:
        return self.process.url if self.process else self._url

    def _connect(self) -> None:
        if self.client:
            self.client.close()
        client_id = f"p3s-batch-{self._client_key}-{hashlib.sha1(self.url.encode()).hexdigest()[:8]}"
        self.client = ComfyClient(self.url, client_id=client_id, timeout=self.settings.http_timeout)
        self._uploaded.clear()

    def info(self) -> ServerInfo:
        return ServerInfo(self.name, self.url, socket.gethostname(), self.process.pid if self.process else None)

    def recover(self) -> ServerInfo | str:
        """Make the server answer: start (or restart) an owned one that is not running or not
        answering; wait up to ``server_wait`` for a given one. The error's text when it stays unreachable."""
        if self.process:
            if self.process.running() and self.client and self.client.alive():
                return self.info()
            try:
                self.process.start()
            except LaunchError as exc:
                return str(exc)
            self._connect()
            return self.info()
        self._connect()
        deadline = time.monotonic() + self.settings.server_wait
        while True:
            if self.client.alive():
                return self.info()
            if time.monotonic() >= deadline:
                return f"{self.url} did not answer within {self.settings.server_wait:g} s"
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))

    def progress(self) -> dict[str, Any] | None:
        """The running item's id and its current node's step (``value``/``max``), or None when idle."""
        return dict(self._progress) if self._progress else None

    def pid(self) -> int | None:
        """The owned ComfyUI's process id (None for a server given by URL)."""
        return self.process.pid if self.process else None

    def close(self) -> None:
        if self.client:
            self.client.close()
        if self.process:
            self.process.close()

    # -- one item -----------------------------------------------------------------------------

    def run_item(self, work: WorkItem) -> Outcome:
        """Run one item on this server: adopt a prompt queued before, or submit and retry."""
        if self.client is None:
            self._connect()
        started = time.monotonic()
        outcome = Outcome(work.item.id, FAILED, self.url)
        self._progress = {"item": work.item.id}
        try:
            if work.adopt and self._adopt(work, outcome):
                return outcome
            retrying = Retrying(
                stop=stop_after_attempt(self.settings.retries + 1),
                wait=wait_exponential(multiplier=self.settings.backoff),
                retry=retry_if_exception(lambda exc: isinstance(exc, ItemFailed) and not exc.final),
                reraise=True,
            )
            for attempt in retrying:
                number = attempt.retry_state.attempt_number
                prompt_id = work.prompt_id if number == 1 else f"{work.prompt_id}-r{number}"
                with attempt:
                    self._attempt(work, prompt_id, outcome)
        except ItemFailed as exc:
            outcome.status, outcome.error = FAILED, str(exc)
        except ServerUnreachable as exc:
            outcome.status, outcome.error = SERVER_LOST, str(exc)
        finally:
            outcome.seconds = round(time.monotonic() - started, 3)
            self._progress = None
        return outcome

    def _log(self, outcome: Outcome, prompt_id: str | None, kind: str, started: float, error: str | None = None):
        outcome.attempts.append(
            {
                "server": self.url,
                "prompt_id": prompt_id,
                "outcome": kind,
                "error": error,
                "seconds": round(time.monotonic() - started, 3),
                "at": _now(),
            }
        )

    def _attempt(self, work: WorkItem, prompt_id: str, outcome: Outcome) -> None:
        started = time.monotonic()
        try:
            result = self._submit_and_wait(work, prompt_id)
            if not result.succeeded:
                raise ItemFailed(error_text(result))
            outcome.files = self._fetch(result)
        except ItemFailed as exc:
            self._log(outcome, prompt_id, FAILED, started, str(exc))
            raise
        except ServerUnreachable as exc:
            self._log(outcome, prompt_id, SERVER_LOST, started, str(exc))
            raise
        self._log(outcome, prompt_id, SUCCESS, started)
        outcome.status, outcome.error = SUCCESS, None

    def _submit_and_wait(self, work: WorkItem, prompt_id: str) -> PromptResult:
        client = self.client
        prompt = build_prompt(self.workflow, work.item, upload=lambda path: self._upload(path, work.images))
        with client.events() as events:  # opened before queueing: no message is missed
            try:
                answer = client.submit(prompt, prompt_id)
            except ComfyAPIError as refused:  # no output node valid: the prompt is refused as a whole
                errors = refused.body.get("node_errors") if isinstance(refused.body, dict) else None
                if errors:
                    raise ItemFailed(f"invalid inputs, not run: {node_errors_text(errors)}", final=True) from None
                raise ItemFailed(str(refused), final=refused.status == 400) from None
            if answer.get("node_errors"):
                with contextlib.suppress(ServerUnreachable, ComfyAPIError):
                    client.cancel(prompt_id)
                raise ItemFailed(f"invalid inputs, not run: {node_errors_text(answer['node_errors'])}", final=True)
            return self._wait(prompt_id, events)

    def _wait(self, prompt_id: str, events) -> PromptResult:
        timeout = self.settings.timeout
        try:
            return self.client.wait(prompt_id, timeout=timeout, events=events, on_message=self._on_message)
        except TimeoutError:
            try:
                self.client.cancel(prompt_id)
            except (ServerUnreachable, ComfyAPIError) as exc:
                raise ServerUnreachable(
                    f"the prompt did not finish within --timeout {timeout:g} s and the server did not answer "
                    f"its cancel ({exc})"
                ) from None
            raise ItemFailed(f"did not finish within --timeout {timeout:g} s; cancelled on the server") from None

    def _on_message(self, message: dict[str, Any]) -> None:
        data = message.get("data") or {}
        if message.get("type") == "progress" and self._progress is not None:
            self._progress.update(node=data.get("node"), value=data.get("value"), max=data.get("max"))

    def _adopt(self, work: WorkItem, outcome: Outcome) -> bool:
        """Take the result of the prompt an earlier driver queued under this id; True when it succeeded."""
        started, client = time.monotonic(), self.client
        with client.events() as events:
            entry = client.history(work.prompt_id)
            if not _finished(entry):
                if not client.queued(work.prompt_id):
                    return False  # the server never got it, or forgot it (restarted): run it anew
                try:
                    result = self._wait(work.prompt_id, events)
                except ItemFailed as exc:
                    self._log(outcome, work.prompt_id, FAILED, started, f"adopted: {exc}")
                    return False
            else:
                result = PromptResult(work.prompt_id, entry)
        if not result.succeeded:
            self._log(outcome, work.prompt_id, FAILED, started, f"adopted: {error_text(result)}")
            return False
        outcome.files = self._fetch(result)
        self._log(outcome, work.prompt_id, SUCCESS, started)
        outcome.status, outcome.error = SUCCESS, None
        return True

    def _upload(self, path: Path, images: dict[str, bytes]) -> str:
        """Upload once per server, under a content-hashed name so different files never collide."""
        data = images[str(path)]
        digest = hashlib.sha256(data).hexdigest()[:16]
        if digest not in self._uploaded:
            self._uploaded[digest] = self.client.upload_bytes(data, f"p3s_batch_{digest}_{Path(path).name}")
        return self._uploaded[digest]

    def _fetch(self, result: PromptResult) -> list[tuple[str, bytes]]:
        """Every output file's bytes, as ``(node_id + '_' + file name, data)``; an owned server's copies are deleted."""
        files = []
        for node_id, record in result.output_files():
            files.append((f"{node_id}_{Path(record['filename']).name}", self.client.view(record)))
        if self.process:
            for _, record in result.output_files():
                self.process.remove_output(record)
        return files
