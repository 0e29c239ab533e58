"""The Ray engine (``--engine ray``, ``pip install .[ray]``): one Ray actor per ComfyUI server.

Each actor is a :class:`~p3s_batch.worker.ServerWorker`, the class the default engine runs in a
thread; items reach it as actor tasks, one at a time, from the same scheduler. Without
``--ray-address`` Ray starts embedded in the driver (``ray.init()``); with it the driver joins
that cluster and the actors are placed on its nodes. A launched server's actor asks for one GPU
(``num_gpus=1``) when the cluster has GPUs, and runs ComfyUI with ``--cpu`` otherwise. The
package itself travels to the workers with the job (``runtime_env.py_modules``); the
dependencies (httpx, tenacity, websockets) and ComfyUI must be on the nodes.

An actor that dies is restarted by Ray (``max_restarts``) and starts its ComfyUI again; the item
it held goes back to the scheduler, which gives it to a server that answers.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import p3s_batch
from p3s_batch.comfy_process import LaunchSpec
from p3s_batch.engines import Engine, WorkerLost
from p3s_batch.worker import ServerWorker, WorkerSettings

ACTOR_RESTARTS = 3


def import_ray():
    try:
        import ray
    except ImportError:
        raise SystemExit(
            "p3s-batch: --engine ray needs Ray: pip install 'comfyui-p3s[ray]' (or pip install ray)."
        ) from None
    return ray


def init_ray(address: str | None = None, **kwargs: Any) -> bool:
    """Start embedded Ray (or join ``address``) with this package shipped to the workers; False when
    Ray was already initialised in this process (then the caller does not own it)."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    runtime_env = {"py_modules": [str(Path(p3s_batch.__file__).parent)]}
    kwargs.setdefault("include_dashboard", False)
    kwargs.setdefault("log_to_driver", False)
    ray.init(address=address, runtime_env=runtime_env, **kwargs)
    return True


class RayEngine(Engine):
    """ServerWorker actors: one per ``servers`` URL (no resources), and ``launch`` that start their own
    ComfyUI (one GPU each when the cluster has GPUs, else one CPU each)."""

    name = "ray"

    def __init__(
        self,
        workflow: dict[str, Any],
        settings: WorkerSettings,
        servers: list[str],
        launch: int = 0,
        spec: LaunchSpec | None = None,
        client_key: str = "",
        address: str | None = None,
        cpu_servers: bool = False,
        server_cpus: float = 1.0,
        init_kwargs: dict[str, Any] | None = None,
    ):
        ray = self.ray = import_ray()
        self._owns_ray = init_ray(address, **(init_kwargs or {}))
        remote = ray.remote(ServerWorker)
        gpus = 0 if cpu_servers else int(ray.cluster_resources().get("GPU", 0))
        if launch and gpus and gpus < launch:
            self.close()
            raise SystemExit(
                f"p3s-batch: --launch {launch} asks for {launch} GPUs, one per server; the Ray cluster has {gpus}. "
                "Launch fewer servers, add GPU nodes, or pass --cpu-servers."
            )
        options = {"max_restarts": ACTOR_RESTARTS, "max_task_retries": 0, "max_concurrency": 2}
        self.actors = [
            remote.options(num_cpus=0, **options).remote(
                f"server-{i + 1}", workflow, settings, url=url, client_key=client_key
            )
            for i, url in enumerate(servers)
        ]
        first = len(servers)
        self.actors += [
            remote.options(num_cpus=server_cpus, num_gpus=1 if gpus else 0, **options).remote(
                f"server-{first + i + 1}", workflow, settings, launch=spec, gpu=bool(gpus), client_key=client_key
            )
            for i in range(launch)
        ]
        self.size = len(self.actors)
        self.gpu_servers = launch if gpus else 0
        self._progress: list[dict[str, Any] | None] = [None] * self.size
        self._progress_refs: list[Any] = [None] * self.size
        self._progress_at = [0.0] * self.size

    def call(self, worker: int, method: str, *args: Any) -> Any:
        return getattr(self.actors[worker], method).remote(*args)

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        done, rest = self.ray.wait(handles, num_returns=1, timeout=timeout)
        if done and rest:
            more, _ = self.ray.wait(rest, num_returns=len(rest), timeout=0)
            done += more
        return done

    def result(self, handle: Any) -> Any:
        try:
            return self.ray.get(handle)
        except (self.ray.exceptions.RayActorError, self.ray.exceptions.ActorUnavailableError) as exc:
            raise WorkerLost(f"its Ray actor died ({type(exc).__name__})") from exc
        except self.ray.exceptions.RayError as exc:
            raise WorkerLost(f"{type(exc).__name__}: {exc}") from exc

    def progress(self, worker: int) -> dict[str, Any] | None:
        ref = self._progress_refs[worker]
        if ref is not None:
            ready, _ = self.ray.wait([ref], timeout=0)
            if ready:
                try:
                    self._progress[worker] = self.ray.get(ref)
                except self.ray.exceptions.RayError:
                    self._progress[worker] = None
                self._progress_refs[worker] = None
        if self._progress_refs[worker] is None and time.monotonic() - self._progress_at[worker] > 0.5:
            self._progress_refs[worker] = self.actors[worker].progress.remote()
            self._progress_at[worker] = time.monotonic()
        return self._progress[worker]

    def close(self) -> None:
        ray = self.ray
        for actor in getattr(self, "actors", []):
            with contextlib.suppress(ray.exceptions.RayError):
                ray.get(actor.close.remote(), timeout=30)
            ray.kill(actor)
        if self._owns_ray:
            ray.shutdown()
