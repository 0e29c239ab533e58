"""p3s-batch: queue an API-format workflow once per item of a CSV/JSONL file on ComfyUI servers.

Items override node inputs (see p3s_batch/items.py for the syntax) and are spread over the
servers: the ones given by ``--server`` and the ones ``--launch N`` starts. The default engine
runs a worker per server in a thread of this process; ``--engine ray`` makes each worker a Ray
actor (embedded Ray, or the cluster at ``--ray-address``). Both share the worker
(p3s_batch.worker), the scheduler (p3s_batch.scheduler) and the ledger (p3s_batch.ledger):
``OUT/ledger.sqlite`` records every attempt and each item's end; outputs land in ``OUT/<item id>/``.
Rerunning the same command resumes what is not done.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p3s_batch.comfy_process import LaunchError, LaunchSpec
from p3s_batch.engines import Engine, LocalEngine
from p3s_batch.items import BatchInputError, BatchItem, load_items, load_workflow
from p3s_batch.ledger import Ledger, LedgerBusy
from p3s_batch.scheduler import BatchSummary, drive, resume_tickets
from p3s_batch.worker import ServerWorker, WorkerSettings

DEFAULT_SERVER = "http://127.0.0.1:8188"
ENGINES = ("local", "ray")
__all__ = ["BatchOptions", "BatchSummary", "main", "run_batch"]


@dataclass
class BatchOptions:
    servers: list[str] = field(default_factory=lambda: [DEFAULT_SERVER])
    retries: int = 2
    backoff: float = 2.0
    timeout: float = 600.0
    limit: int | None = None
    engine: str = "local"
    launch: int = 0
    launch_spec: LaunchSpec | None = None
    ray_address: str | None = None
    ray_init: dict[str, Any] = field(default_factory=dict)
    cpu_servers: bool = False
    server_wait: float = 60.0
    http_timeout: float = 15.0
    max_server_losses: int = 3
    progress_bar: bool | None = None

    def worker_settings(self) -> WorkerSettings:
        return WorkerSettings(self.retries, self.backoff, self.timeout, self.server_wait, self.http_timeout)


def build_engine(workflow: dict[str, Any], options: BatchOptions, client_key: str) -> Engine:
    """The engine of ``options.engine`` with a worker per ``--server`` and per launched server."""
    settings = options.worker_settings()
    if options.engine == "ray":
        from p3s_batch.ray_engine import RayEngine

        return RayEngine(
            workflow,
            settings,
            options.servers,
            options.launch,
            options.launch_spec,
            client_key,
            options.ray_address,
            options.cpu_servers,
            init_kwargs=options.ray_init,
        )
    workers = [
        ServerWorker(f"server-{i + 1}", workflow, settings, url=url, client_key=client_key)
        for i, url in enumerate(options.servers)
    ]
    gpus = [] if options.cpu_servers else visible_gpus()
    if options.launch and gpus and len(gpus) < options.launch:
        raise LaunchError(f"--launch {options.launch} asks for one GPU per server; this machine has {len(gpus)}.")
    for i in range(options.launch):
        name = f"server-{len(options.servers) + i + 1}"
        spec = options.launch_spec
        if gpus:  # one GPU per server, through CUDA_VISIBLE_DEVICES
            spec = LaunchSpec(**{**spec.__dict__, "extra_args": [*spec.extra_args, "--cuda-device", gpus[i]]})
        workers.append(ServerWorker(name, workflow, settings, launch=spec, gpu=bool(gpus), client_key=client_key))
    return LocalEngine(workers)


def visible_gpus() -> list[str]:
    """The CUDA devices this machine shows (``CUDA_VISIBLE_DEVICES``, else ``nvidia-smi -L``)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return []
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False).stdout
    return [str(i) for i, line in enumerate(listing.splitlines()) if line.startswith("GPU ")]


def run_batch(
    workflow: dict[str, Any],
    items: list[BatchItem],
    out_dir: Path,
    options: BatchOptions | None = None,
    log: Callable[[str], None] = print,
    engine: Engine | None = None,
) -> BatchSummary:
    """Run the items not yet done on the engine of ``options`` (or on ``engine``, which stays open).

    Raises :class:`~p3s_batch.ledger.LedgerBusy` when another driver holds ``out_dir``.
    """
    options = options or BatchOptions()
    out_dir = Path(out_dir)
    with Ledger(out_dir) as ledger:
        tickets, done = resume_tickets(ledger, items)
        if options.limit is not None:
            tickets = tickets[: options.limit]
        own_engine = engine is None
        if own_engine:
            engine = build_engine(workflow, options, ledger.client_key())
        ledger.start_run(engine.name)
        log(
            f"batch: {len(items)} item(s), {done} done before, {len(tickets)} to run on "
            f"{engine.size} server(s) ({engine.name} engine); ledger {ledger.path}"
        )
        summary = drive(
            engine, ledger, tickets, out_dir, log, options.max_server_losses, options.progress_bar, own_engine
        )
        summary.skipped = done
        ledger.end_run(summary.__dict__)
    log(
        f"batch: {summary.succeeded} ok, {summary.failed} failed, {summary.skipped} skipped (done before), "
        f"{summary.retries} retr{'y' if summary.retries == 1 else 'ies'}"
        + (f", {summary.requeued} requeued after a lost server" if summary.requeued else "")
        + (f"; stopped: {summary.stopped}; rerun the same command to resume" if summary.stopped else "")
        + ("; interrupted: rerun the same command to resume" if summary.interrupted else "")
    )
    return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="p3s-batch", description=__doc__.split("\n\n")[0])
    parser.add_argument("workflow", type=Path, help="API-format workflow JSON (Workflow > Export (API))")
    parser.add_argument("items", type=Path, help="CSV or JSONL: 'id', '<node>.<input>', '@image:<node>.<input>'")
    parser.add_argument("-o", "--out", type=Path, required=True, help="output folder (holds ledger.sqlite)")
    parser.add_argument(
        "--server", action="append", dest="servers", help=f"ComfyUI URL, repeatable (default {DEFAULT_SERVER})"
    )
    parser.add_argument("--retries", type=int, default=2, help="retries per failed item (default 2)")
    parser.add_argument("--backoff", type=float, default=2.0, help="seconds before the first retry, doubling")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a prompt may run, then cancelled")
    parser.add_argument("--limit", type=int, help="run at most this many pending items, then stop")
    parser.add_argument("--server-wait", type=float, default=60.0, help="seconds to wait for a lost server to answer")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (one line per item only)")
    engine = parser.add_argument_group("engines and launched servers")
    engine.add_argument("--engine", choices=ENGINES, default="local", help="local threads (default) or Ray actors")
    engine.add_argument("--ray-address", help="join this Ray cluster (e.g. ray://head:10001 or auto); default embedded")
    engine.add_argument("--ray-cpus", type=int, help="CPUs of embedded Ray (default: all)")
    engine.add_argument("--ray-object-store-mb", type=int, help="object store of embedded Ray, MB")
    engine.add_argument("--launch", type=int, default=0, help="start N ComfyUI servers (a GPU each if any)")
    engine.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI folder for --launch")
    engine.add_argument("--models", help="models folder of launched servers (default COMFYUI/models)")
    engine.add_argument("--custom-nodes", help="custom nodes folder of launched servers (default COMFYUI/custom_nodes)")
    engine.add_argument("--launcher", help="script run as 'python SCRIPT COMFYUI ARGS...' instead of main.py")
    engine.add_argument("--comfy-arg", action="append", default=[], help="extra ComfyUI argument, repeatable")
    engine.add_argument("--cpu-servers", action="store_true", help="launch CPU servers even where there are GPUs")
    args = parser.parse_args(argv)
    if args.retries < 0 or args.backoff < 0 or args.timeout <= 0 or (args.limit is not None and args.limit < 0):
        parser.error("--retries, --backoff and --limit must be >= 0 and --timeout > 0")
    if args.launch < 0 or args.server_wait < 0:
        parser.error("--launch and --server-wait must be >= 0")
    if args.launch and not args.comfyui:
        parser.error("--launch needs --comfyui DIR (the ComfyUI folder with main.py) or COMFYUI_PATH")
    if (args.ray_address or args.ray_cpus or args.ray_object_store_mb) and args.engine != "ray":
        parser.error("--ray-address, --ray-cpus and --ray-object-store-mb need --engine ray")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["dreambench"]:  # p3s-batch dreambench DATASET -o OUT ...
        from p3s_batch.dreambench import main as dreambench_main

        return dreambench_main(argv[1:])
    args = parse_args(argv)
    if args.engine == "ray":  # before anything is written: says how to install it when missing
        from p3s_batch.ray_engine import import_ray

        import_ray()
    spec = None
    try:
        workflow = load_workflow(args.workflow)
        items = load_items(args.items, workflow)
        if args.launch:
            spec = LaunchSpec(
                args.comfyui, args.models, args.custom_nodes, launcher=args.launcher, extra_args=args.comfy_arg
            )
            if not args.ray_address:  # on a cluster the paths are the nodes', checked there
                spec.check()
    except (BatchInputError, LaunchError) as exc:
        print(f"p3s-batch: {exc}", file=sys.stderr)
        return 2
    ray_init = {}
    if args.ray_cpus:
        ray_init["num_cpus"] = args.ray_cpus
    if args.ray_object_store_mb:
        ray_init["object_store_memory"] = args.ray_object_store_mb * 1024 * 1024
    servers = args.servers if args.servers is not None else ([] if args.launch else [DEFAULT_SERVER])
    options = BatchOptions(
        servers=[url.rstrip("/") for url in servers],
        retries=args.retries,
        backoff=args.backoff,
        timeout=args.timeout,
        limit=args.limit,
        engine=args.engine,
        launch=args.launch,
        launch_spec=spec,
        ray_address=args.ray_address,
        ray_init=ray_init,
        cpu_servers=args.cpu_servers,
        server_wait=args.server_wait,
        progress_bar=False if args.no_progress else None,
    )
    try:
        summary = run_batch(workflow, items, args.out, options, log=lambda line: print(line, flush=True))
    except (LedgerBusy, LaunchError) as exc:
        print(f"p3s-batch: {exc}", file=sys.stderr)
        return 3
    if summary.interrupted:
        return 130
    if summary.stopped:
        return 3
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
