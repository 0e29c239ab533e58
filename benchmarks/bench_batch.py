"""p3s-batch at load under the Ray engine: nothing lost when a server is SIGKILLed (not a test).

Embedded Ray on this machine, two CPU ComfyUI servers launched as Ray actors (``--launch 2``),
the selection example workflow (``example_workflows/api/p3s_select_subject.api.json``), one item
per value of the RNGR mask's ``sigma`` (so each item computes its mask; ComfyUI's cache keeps
only the image and the model).

- Accounting run: ``--items`` items on both servers; when a third have succeeded, the ComfyUI
  process of the server running an item is SIGKILLed (its actor starts it again) and, with
  ``--kill-actor``, at half the other server's Ray actor is killed (Ray restarts it). Then
  ``succeeded + failed == items`` (``lost``: neither), ``duplicates``: items the ledger has as
  succeeded more than once, ``outputs_complete``: every succeeded item has a readable PNG for
  each output node, the same set for all.
- Scaling (not with ``--quick``): ``--scaling-items`` items on one server, then on two, both
  warmed up first: ``items_per_min`` keyed by server count, and their ratio.
- Driver overhead (not with ``--quick``): the items posted by hand on one server (POST /prompt,
  websocket until the end, GET /view of each output, files written), against the Ray engine and
  the default engine on that server: seconds per item more than by hand.

    python -m benchmarks.bench_batch --json [--items N] [--quick] [--kill-actor]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from devtools.batch_host import SLOW_NODE, launch_spec, slow_workflow  # noqa: E402
from devtools.workflows import example_api  # noqa: E402
from p3s_batch.api_client import ComfyClient  # noqa: E402
from p3s_batch.cli import BatchOptions, run_batch  # noqa: E402
from p3s_batch.engines import Engine, LocalEngine  # noqa: E402
from p3s_batch.items import BatchItem, Override, build_prompt  # noqa: E402
from p3s_batch.ledger import FAILED, SUCCESS, Ledger  # noqa: E402
from p3s_batch.worker import ServerWorker, WorkerSettings  # noqa: E402

RAY_INIT = {"num_cpus": 2, "object_store_memory": 150 * 1024 * 1024}
MASK_NODE = "4"


class EngineView(Engine):
    """Some of an engine's workers, as an engine of their own (left open at the end)."""

    def __init__(self, engine: Engine, workers: list[int]):
        self.engine, self.workers, self.size, self.name = engine, workers, len(workers), engine.name

    def call(self, worker: int, method: str, *args: Any) -> Any:
        return self.engine.call(self.workers[worker], method, *args)

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        return self.engine.wait(handles, timeout)

    def result(self, handle: Any) -> Any:
        return self.engine.result(handle)

    def progress(self, worker: int) -> dict[str, Any] | None:
        return self.engine.progress(self.workers[worker])


def items_for(count: int, phase: int) -> list[BatchItem]:
    """``count`` items, each its own mask sigma (distinct across phases, so no phase hits a cache)."""
    items = []
    for i in range(count):
        sigma = round(0.5 + 1.5 * i / max(1, count) + 0.0007 * phase, 5)
        key = f"{MASK_NODE}.sigma"
        items.append(BatchItem(f"p{phase}-{i:04d}", {key: sigma}, [Override(MASK_NODE, "sigma", sigma)]))
    return items


def slow_items(count: int, phase: int) -> list[BatchItem]:
    """``count`` items of the slow-image workflow, each its own grey level."""
    node = SLOW_NODE
    return [
        BatchItem(f"p{phase}-{i:04d}", {f"{node}.level": i / count}, [Override(node, "level", i / count)])
        for i in range(count)
    ]


def timed_batch(workflow, items, out: Path, engine: Engine) -> float:
    started = time.monotonic()
    summary = run_batch(workflow, items, out, BatchOptions(retries=1, backoff=0.5), log=lambda _: None, engine=engine)
    elapsed = time.monotonic() - started
    if summary.succeeded != len(items):
        raise SystemExit(f"bench_batch: a clean run did not succeed whole: {summary}")
    return elapsed


def by_hand(workflow, items, url: str, out: Path) -> float:
    """The items posted one by one to ``url`` with the plain client; seconds in all."""
    client = ComfyClient(url)
    started = time.monotonic()
    for item in items:
        with client.events() as events:
            prompt_id = client.submit(build_prompt(workflow, item, upload=str))["prompt_id"]
            result = client.wait(prompt_id, timeout=600, events=events)
        folder = out / item.id
        folder.mkdir(parents=True)
        for node_id, record in result.output_files():
            (folder / f"{node_id}_{record['filename']}").write_bytes(client.view(record))
    client.close()
    return time.monotonic() - started


def outputs_complete(out: Path, ledger: Ledger, workflow: dict[str, Any]) -> bool:
    """Every succeeded item has a readable PNG of each output node (SaveImage, PreviewImage) of the workflow."""
    from PIL import Image

    wanted = {node for node, spec in workflow.items() if spec["class_type"] in ("SaveImage", "PreviewImage")}
    for item in ledger.items().values():
        if item.status != SUCCESS:
            continue
        if not wanted <= {Path(name).name.split("_", 1)[0] for name in item.outputs}:
            return False
        for name in item.outputs:
            try:
                with Image.open(out / name) as image:
                    image.verify()
            except (OSError, SyntaxError):
                return False
    return True


class Killer(threading.Thread):
    """Watches the ledger; SIGKILLs a server's ComfyUI at a third, kills the other's actor at half."""

    def __init__(self, out: Path, total: int, engine, kill_actor: bool):
        super().__init__(daemon=True)
        self.out, self.total, self.engine, self.kill_actor = out, total, engine, kill_actor
        self.killed_servers, self.killed_actors = [], []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            try:
                with Ledger(self.out, lock=False) as ledger:
                    succeeded = ledger.counts()[SUCCESS]
                    running = {i.server for i in ledger.items().values() if i.status == "running"}
                    servers = {row["name"]: row for row in ledger.servers()}  # the newest of each
            except (FileNotFoundError, OSError, Exception):
                continue
            if not self.killed_servers and succeeded >= self.total // 3:
                victim = next((row for row in servers.values() if row["url"] in running and row["pid"]), None)
                if victim:
                    os.kill(victim["pid"], signal.SIGKILL)
                    self.killed_servers.append(victim["name"])
            elif self.kill_actor and self.killed_servers and not self.killed_actors and succeeded >= self.total // 2:
                other = next(
                    (r for n, r in servers.items() if n not in self.killed_servers and r["url"] in running), None
                )
                if other:
                    import ray

                    index = int(other["name"].rsplit("-", 1)[1]) - 1
                    ray.kill(self.engine.actors[index], no_restart=False)
                    self.killed_actors.append(other["name"])


def accounting_run(workflow, items: list[BatchItem], out: Path, engine, kill_actor: bool) -> dict[str, Any]:
    count = len(items)
    killer = Killer(out, count, engine, kill_actor)
    killer.start()
    started = time.monotonic()
    options = BatchOptions(retries=1, backoff=0.5, server_wait=120)
    summary = run_batch(workflow, items, out, options, log=lambda line: print(line, file=sys.stderr), engine=engine)
    elapsed = time.monotonic() - started
    killer.done.set()
    with Ledger(out, lock=False) as ledger:
        items_rows = ledger.items()
        succeeded = sum(i.status == SUCCESS for i in items_rows.values())
        failed = sum(i.status == FAILED for i in items_rows.values())
        pids: dict[str, set[int]] = {}
        for row in ledger.servers():
            pids.setdefault(row["name"], set()).add(row["pid"])
        result = {
            "items": count,
            "succeeded": succeeded,
            "failed": failed,
            "lost": count - succeeded - failed,
            "duplicates": len(ledger.duplicates()),
            "killed_servers": len(killer.killed_servers),
            "killed_actors": len(killer.killed_actors),
            "restarted_servers": sum(len(p) > 1 for p in pids.values()),
            "requeued": summary.requeued,
            "retired_workers": summary.retired,
            "outputs_complete": outputs_complete(out, ledger, workflow),
            "seconds": round(elapsed, 1),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_batch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100, help="items per run (default 100)")
    parser.add_argument("--quick", action="store_true", help="the accounting run only (no scaling, no overhead)")
    parser.add_argument("--kill-actor", action="store_true", help="also kill the other server's Ray actor at half")
    parser.add_argument("--scaling-items", type=int, default=12, help="items of each scaling and overhead run")
    parser.add_argument(
        "--workflow",
        choices=("select", "slow"),
        default="select",
        help="the selection example (default) or the test-only slow-image node (1 s an item: the check in CI)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.items < 3:
        parser.error("--items must be at least 3")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import ray

    from p3s_batch.ray_engine import RayEngine, init_ray

    tmp = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    workflow = example_api("p3s_select_subject") if args.workflow == "select" else slow_workflow(1.0)
    make_items = items_for if args.workflow == "select" else slow_items
    init_ray(**RAY_INIT)
    engine = None
    try:
        settings = WorkerSettings(retries=1, backoff=0.5, timeout=600, server_wait=120)
        selection = args.workflow == "select"
        spec = launch_spec(tmp / "spec", clip_vision=selection, pack=selection)
        engine = RayEngine(workflow, settings, [], 2, spec, "bench")
        report: dict[str, Any] = {"engine": "ray", "servers": 2, "workflow": args.workflow}
        if not args.quick:
            infos = [engine.result(engine.call(w, "recover")) for w in range(2)]
            n = args.scaling_items
            warm = make_items(2, phase=0)
            timed_batch(workflow, warm, tmp / "warm", engine)  # each server loads the CLIP vision model once
            manual = by_hand(workflow, make_items(n, phase=2), infos[0].url, tmp / "by_hand")
            ray_one = timed_batch(workflow, make_items(n, phase=1), tmp / "ray1", EngineView(engine, [0]))
            local = LocalEngine([ServerWorker("local-1", workflow, settings, url=infos[0].url, client_key="bench")])
            local_one = timed_batch(workflow, make_items(n, phase=3), tmp / "local1", local)
            local.close()
            ray_two = timed_batch(workflow, make_items(n, phase=4), tmp / "ray2", engine)
            per_min = {"1": round(60 * n / ray_one, 2), "2": round(60 * n / ray_two, 2)}
            report.update(
                items_per_min=per_min,
                scaling_ratio=round(per_min["2"] / per_min["1"], 3),
                scaling_items=n,
                by_hand_s_per_item=round(manual / n, 3),
                driver_overhead_s_per_item={
                    "ray": round((ray_one - manual) / n, 3),
                    "local": round((local_one - manual) / n, 3),
                },
            )
        accounting = accounting_run(workflow, make_items(args.items, 9), tmp / "accounting", engine, args.kill_actor)
        report.update(accounting)
        if args.quick:
            report["items_per_min"] = {"2": round(60 * args.items / accounting["seconds"], 2)}
    finally:
        if engine is not None:
            engine.close()
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(report, indent=None if args.json else 2))
    ok = report["lost"] == 0 and report["duplicates"] == 0 and report["outputs_complete"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
