"""How the driver reaches its workers: the small interface both engines give the scheduler.

The scheduler (:mod:`p3s_batch.scheduler`) calls a worker's method and waits for the calls in
flight; an engine only says where the :class:`~p3s_batch.worker.ServerWorker` objects live.
:class:`LocalEngine` (the default, no extra dependency) keeps them in the driver, one thread
each; :class:`p3s_batch.ray_engine.RayEngine` makes each a Ray actor.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

from p3s_batch.worker import ServerWorker


class WorkerLost(RuntimeError):
    """A worker could not answer a call (its actor died, or it raised): the call's work is not done."""


class Engine:
    """``call`` a worker's method, ``wait`` for calls, take their ``result``."""

    name = "engine"
    size = 0

    def call(self, worker: int, method: str, *args: Any) -> Any:
        raise NotImplementedError

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        """The handles among ``handles`` whose calls have ended (waits up to ``timeout`` for one)."""
        raise NotImplementedError

    def result(self, handle: Any) -> Any:
        """The call's return value; :class:`WorkerLost` when the worker could not give one."""
        raise NotImplementedError

    def progress(self, worker: int) -> dict[str, Any] | None:
        """The latest known progress of a worker's running item (never blocks)."""
        return None

    def close(self) -> None:
        """Stop the workers (and the servers they own)."""


class LocalEngine(Engine):
    """Workers in the driver process, one thread each (a thread runs one call at a time)."""

    name = "local"

    def __init__(self, workers: list[ServerWorker]):
        self.workers = workers
        self.size = len(workers)
        # One long-lived thread per worker: it also starts an owned ComfyUI, which dies with that thread.
        self._threads = [
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"p3s-batch-{w.name}") for w in workers
        ]

    def call(self, worker: int, method: str, *args: Any) -> concurrent.futures.Future:
        return self._threads[worker].submit(getattr(self.workers[worker], method), *args)

    def wait(self, handles: list[concurrent.futures.Future], timeout: float) -> list[concurrent.futures.Future]:
        done, _ = concurrent.futures.wait(handles, timeout=timeout, return_when=concurrent.futures.FIRST_COMPLETED)
        return list(done)

    def result(self, handle: concurrent.futures.Future) -> Any:
        try:
            return handle.result()
        except Exception as exc:
            raise WorkerLost(f"{type(exc).__name__}: {exc}") from exc

    def progress(self, worker: int) -> dict[str, Any] | None:
        return self.workers[worker].progress()

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
        for thread in self._threads:
            thread.shutdown(wait=False, cancel_futures=True)
