"""The driver: hands items to idle workers, records every end in the ledger, writes the outputs.

Shared by both engines. One item is in one worker's hands at a time. Each dispatch gets a fresh
prompt id, written to the ledger before the worker sees it, so a driver restarted after a kill
adopts the prompts its predecessor had queued instead of running them again. An item whose
server was lost goes back to the front of the queue (and the worker to :meth:`recover`); after
``max_server_losses`` such losses it is failed with that reason (it may be what kills the server).
A worker whose server does not come back is retired; when none is left the run stops with the
rest pending: rerunning the same command resumes them.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from p3s_batch.engines import Engine, WorkerLost
from p3s_batch.items import BatchItem
from p3s_batch.ledger import FAILED, PENDING, RUNNING, SERVER_LOST, SUCCESS, Ledger
from p3s_batch.worker import Outcome, ServerInfo, WorkItem

WORKER_RECOVER_TRIES = 6
"""Calls of a worker that could not answer (an actor restarting) before it is retired, 2 s apart and doubling."""


@dataclass
class BatchSummary:
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    retries: int = 0
    requeued: int = 0
    pending: int = 0
    retired: int = 0
    """Workers whose server did not come back (out of the rest of the run)."""
    interrupted: bool = False
    stopped: str | None = None
    """Why the run ended with items left (no server answers), or None."""


@dataclass
class _Ticket:
    item: BatchItem
    losses: int = 0
    adopt_server: str | None = None
    adopt_prompt: str | None = None
    last_loss: str = ""


@dataclass
class _Driver:
    engine: Engine
    ledger: Ledger
    out_dir: Path
    log: Callable[[str], None]
    max_server_losses: int
    summary: BatchSummary = field(default_factory=BatchSummary)
    bar: Any = None
    total: int = 0
    done: int = 0

    def __post_init__(self) -> None:
        self.urls: dict[int, str] = {}
        self.retired: dict[int, str] = {}
        self.idle: list[int] = []
        self.inflight: dict[Any, tuple[int, str, _Ticket | None, str | None]] = {}
        self.recover_due: dict[int, float] = {}
        self.unreachable: dict[int, int] = {}

    # -- dispatch -----------------------------------------------------------------------------

    def _take(self, pending: deque[_Ticket], worker: int) -> _Ticket | None:
        """The next ticket for a worker: one its server may already hold first, then one no live server holds."""
        url = self.urls[worker]
        live = {u for w, u in self.urls.items() if w not in self.retired}
        for choice in (
            lambda t: t.adopt_server == url,
            lambda t: t.adopt_server is None or t.adopt_server not in live,
        ):
            for ticket in pending:
                if choice(ticket):
                    pending.remove(ticket)
                    return ticket
        return None

    def _dispatch(self, pending: deque[_Ticket]) -> None:
        for worker in list(self.idle):
            ticket = self._take(pending, worker)
            if ticket is None:
                continue
            url = self.urls[worker]
            adopt = ticket.adopt_server == url and ticket.adopt_prompt is not None
            prompt_id = ticket.adopt_prompt if adopt else f"p3s-batch-{uuid.uuid4().hex}"
            ticket.adopt_server = ticket.adopt_prompt = None
            self.ledger.mark_running(ticket.item.id, ticket.item.params, url, prompt_id)
            try:
                images = {str(path): path.read_bytes() for path in ticket.item.image_paths()}
            except OSError as exc:  # gone or unreadable since the items were checked
                failed = Outcome(ticket.item.id, FAILED, url, error=f"cannot read an image of the item: {exc}")
                failed.attempts = [{"server": url, "prompt_id": None, "outcome": FAILED, "error": failed.error}]
                self._ended(worker, ticket, prompt_id, failed)
                continue
            handle = self.engine.call(worker, "run_item", WorkItem(ticket.item, images, prompt_id, adopt))
            self.inflight[handle] = (worker, "item", ticket, prompt_id)
            self.idle.remove(worker)

    def _recover(self, worker: int, delay: float = 0.0) -> None:
        self.recover_due[worker] = time.monotonic() + delay

    def _start_due_recovers(self) -> None:
        for worker, due in list(self.recover_due.items()):
            if due <= time.monotonic():
                del self.recover_due[worker]
                self.inflight[self.engine.call(worker, "recover")] = (worker, "recover", None, None)

    # -- ends ---------------------------------------------------------------------------------

    def _recovered(self, worker: int, value: Any) -> None:
        if isinstance(value, ServerInfo):
            self.urls[worker] = value.url
            self.ledger.record_server(value.name, value.url, value.host, value.pid)
            self.unreachable.pop(worker, None)
            self.idle.append(worker)
            return
        if isinstance(value, WorkerLost):  # an actor being restarted by Ray: ask again, a few times
            tries = self.unreachable[worker] = self.unreachable.get(worker, 0) + 1
            if tries <= WORKER_RECOVER_TRIES:
                self._recover(worker, delay=min(30.0, 2.0**tries))
                return
        self.retired[worker] = str(value)
        self.log(f"batch: worker {worker + 1} is out of this run: {value}")

    def _ended(self, worker: int, ticket: _Ticket, prompt_id: str, value: Outcome | WorkerLost) -> bool:
        """Record an item's end; True when it is back in the queue."""
        item = ticket.item
        if isinstance(value, WorkerLost):
            url = self.urls.get(worker)
            value = Outcome(item.id, SERVER_LOST, url or "?", error=str(value))
            value.attempts = [{"server": url, "prompt_id": prompt_id, "outcome": SERVER_LOST, "error": value.error}]
        for attempt in value.attempts[:-1]:
            self.log(f"  {item.id}: attempt on {attempt['server']} failed: {attempt['error']}; retried")
        self.summary.retries += max(0, len(value.attempts) - 1)
        if value.status == SERVER_LOST:
            ticket.losses += 1
            ticket.last_loss = value.error or ""
            if ticket.losses <= self.max_server_losses:
                self.ledger.finish(item.id, item.params, PENDING, value.attempts, error=value.error)
                self.summary.requeued += 1
                self.log(f"  {item.id}: server {value.server} lost ({value.error}); the item goes to the next server")
                return True
            value.status = FAILED
            value.error = (
                f"its server was lost {ticket.losses} times while running it (last: {ticket.last_loss}); "
                "the item may be what stops the server"
            )
        outputs = self._write(item.id, value.files) if value.status == SUCCESS else []
        self.ledger.finish(item.id, item.params, value.status, value.attempts, outputs, value.error, value.seconds)
        self.done += 1
        width = len(str(self.total))
        if value.status == SUCCESS:
            self.summary.succeeded += 1
            detail = f"ok in {value.seconds:.1f} s on {value.server}, {len(outputs)} file(s)"
        else:
            self.summary.failed += 1
            detail = f"FAILED after {len(value.attempts)} attempt(s): {value.error}"
        self.log(f"[{self.done:>{width}}/{self.total}] {item.id} {detail}")
        if self.bar is not None:
            self.bar.update(1)
        return False

    def _write(self, item_id: str, files: list[tuple[str, bytes]]) -> list[str]:
        """The item's files into ``OUT/<item id>/`` (replaced whole, through a staging folder)."""
        staging = self.out_dir / f".partial-{item_id}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name, data in files:
            (staging / name).write_bytes(data)
        final = self.out_dir / item_id
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        return [f"{item_id}/{name}" for name, _ in files]

    # -- the loop -----------------------------------------------------------------------------

    def run(self, tickets: list[_Ticket]) -> None:
        pending = deque(tickets)
        self.total = len(tickets)
        for worker in range(self.engine.size):
            self._recover(worker)
        while pending or any(kind == "item" for _, kind, _, _ in self.inflight.values()):
            self._start_due_recovers()
            self._dispatch(pending)
            if not self.inflight and not self.recover_due:
                reasons = "; ".join(self.retired.values()) or "no server"
                self.summary.stopped = f"no server left to run the {len(pending)} pending item(s): {reasons}"
                break
            if not self.inflight:
                time.sleep(0.2)
                continue
            for handle in self.engine.wait(list(self.inflight), timeout=0.5):
                worker, kind, ticket, prompt_id = self.inflight.pop(handle)
                try:
                    value = self.engine.result(handle)
                except WorkerLost as exc:
                    value = exc
                if kind == "recover":
                    self._recovered(worker, value)
                elif self._ended(worker, ticket, prompt_id, value):
                    pending.appendleft(ticket)
                    self._recover(worker)
                else:
                    self.idle.append(worker)
            self._show_progress()
        self.summary.pending = len(pending)
        self.summary.retired = len(self.retired)

    def _show_progress(self) -> None:
        if self.bar is None:
            return
        steps = []
        for worker in range(self.engine.size):
            state = self.engine.progress(worker)
            if state and state.get("max"):
                steps.append(f"{state['item']} {state['value']}/{state['max']}")
            elif state:
                steps.append(str(state["item"]))
        self.bar.set_postfix_str(", ".join(steps), refresh=False)


def resume_tickets(ledger: Ledger, items: list[BatchItem]) -> tuple[list[_Ticket], int]:
    """The items to run (with what a killed driver had handed out) and how many are done."""
    rows = ledger.items()
    todo, done = [], 0
    for item in items:
        if ledger.is_done(item.id, item.params):
            done += 1
            continue
        ticket = _Ticket(item)
        row = rows.get(item.id)
        if row and row.status == RUNNING and row.params == item.params and row.prompt_id:
            ticket.adopt_server, ticket.adopt_prompt = row.server, row.prompt_id
        todo.append(ticket)
    return todo, done


def drive(
    engine: Engine,
    ledger: Ledger,
    tickets: list[_Ticket],
    out_dir: Path,
    log: Callable[[str], None],
    max_server_losses: int = 3,
    progress_bar: bool | None = None,
    close_engine: bool = True,
) -> BatchSummary:
    """Run the tickets on the engine's workers (closed at the end unless ``close_engine`` is false)."""
    driver = _Driver(engine, ledger, Path(out_dir), log, max_server_losses)
    # tqdm over items, with each server's current step; shown on a terminal only (None = auto).
    with tqdm(total=len(tickets), unit="item", disable=True if progress_bar is False else None, leave=False) as bar:
        driver.bar = None if bar.disable else bar
        if driver.bar is not None:
            driver.log = lambda line: tqdm.write(line)
        try:
            driver.run(tickets)
        except KeyboardInterrupt:
            driver.summary.interrupted = True
        finally:
            if close_engine:
                engine.close()
    return driver.summary
