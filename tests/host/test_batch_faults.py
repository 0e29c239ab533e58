"""p3s-batch when things go wrong, against real ComfyUI servers (the default engine; the Ray engine
shares the worker and the scheduler and is checked by tests/host/test_batch_ray.py).

Items use the test-only Slow Image node (devtools/batch_probe): a chosen delay, then an image.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from devtools.api_client import ComfyClient
from devtools.batch_host import slow_workflow
from devtools.comfy_host import REPO_ROOT, ComfyServer, running_server
from devtools.model_files import link_batch_probe
from p3s_batch.cli import BatchOptions, run_batch
from p3s_batch.items import load_items
from p3s_batch.ledger import Ledger

pytestmark = pytest.mark.host


def items_csv(folder: Path, rows: list[str], header: str = "id,1.seconds,1.level") -> Path:
    path = folder / "items.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def ledger_state(out: Path) -> tuple[dict, list[dict]]:
    try:
        with Ledger(out, lock=False) as ledger:
            return ledger.items(), ledger.attempts()
    except FileNotFoundError:  # not there yet
        return {}, []


def wait_until(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_a_prompt_past_the_timeout_is_cancelled_and_the_server_goes_on(client: ComfyClient, tmp_path: Path):
    workflow = slow_workflow()
    items = load_items(items_csv(tmp_path, ["hang,60,0.1", "after,0.2,0.9"]), workflow)
    out = tmp_path / "out"
    started = time.monotonic()
    summary = run_batch(workflow, items, out, BatchOptions(servers=[client.url], retries=0, timeout=2), log=print)
    elapsed = time.monotonic() - started
    assert (summary.succeeded, summary.failed) == (1, 1)
    rows, attempts = ledger_state(out)
    assert rows["hang"].status == "failed" and rows["hang"].outputs == []
    assert rows["hang"].error == "did not finish within --timeout 2 s; cancelled on the server"
    assert rows["after"].status == "success" and (out / rows["after"].outputs[0]).is_file()
    assert elapsed < 30, "the cancel freed the server: the next item did not wait for the 60 s one"
    (hang,) = [a for a in attempts if a["item_id"] == "hang"]
    entry = client.get_json(f"/history/{hang['prompt_id']}")[hang["prompt_id"]]
    assert any(kind == "execution_interrupted" for kind, _ in entry["status"]["messages"])


def test_a_server_that_hangs_then_is_killed_mid_item_loses_nothing(comfy_server: ComfyServer, tmp_path: Path):
    base = tmp_path / "victim"
    base.mkdir()
    link_batch_probe(base)
    workflow = slow_workflow()
    count = 20
    items = load_items(items_csv(tmp_path, [f"k{i:02d},1.5,{i / count}" for i in range(count)]), workflow)
    out = tmp_path / "out"
    with running_server(base) as victim:

        def busy_on_victim() -> bool:
            return any(r.status == "running" and r.server == victim.url for r in ledger_state(out)[0].values())

        def lost_on_victim() -> int:
            return sum(a["outcome"] == "server_lost" and a["server"] == victim.url for a in ledger_state(out)[1])

        def hang_then_kill() -> None:
            wait_until(busy_on_victim)
            time.sleep(0.3)  # mid-item
            os.kill(victim.process.pid, signal.SIGSTOP)  # hangs: no answer, connections stay open
            wait_until(lambda: lost_on_victim() == 1)
            os.kill(victim.process.pid, signal.SIGCONT)  # back: the worker's recover finds it answering
            wait_until(busy_on_victim)
            time.sleep(0.3)
            os.kill(victim.process.pid, signal.SIGKILL)

        killer = threading.Thread(target=hang_then_kill, daemon=True)
        killer.start()
        options = BatchOptions(
            servers=[victim.url, comfy_server.url], retries=0, timeout=3, server_wait=30, http_timeout=3
        )
        summary = run_batch(workflow, items, out, options, log=print)
        killer.join(5)
    assert victim.process.poll() == -signal.SIGKILL, "the victim hung, came back, and was killed during the run"
    assert (summary.succeeded, summary.failed, summary.pending, summary.requeued) == (count, 0, 0, 2)
    rows, attempts = ledger_state(out)
    assert all(r.status == "success" and (out / r.outputs[0]).is_file() for r in rows.values())
    hung, killed = [a for a in attempts if a["outcome"] == "server_lost"]
    assert hung["server"] == killed["server"] == victim.url
    assert "did not finish within --timeout 3 s and the server did not answer its cancel" in hung["error"]
    assert "closed" in killed["error"]
    assert sorted(a["item_id"] for a in attempts if a["outcome"] == "success") == sorted(rows), "each once"


def test_a_killed_driver_is_refused_company_then_resumed_adopting_its_prompt(client: ComfyClient, tmp_path: Path):
    flow = tmp_path / "flow.json"
    flow.write_text(json.dumps(slow_workflow()))
    items = items_csv(tmp_path, [f"d{i},1.5,{i / 10}" for i in range(3)])
    out = tmp_path / "out"
    command = [sys.executable, "-m", "p3s_batch", str(flow), str(items), "-o", str(out), "--server", client.url]
    command += ["--retries", "0", "--no-progress"]
    before = len(client.get_json("/history"))
    first = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: "success" in {r.status for r in ledger_state(out)[0].values()})
        second = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
        assert second.returncode == 3 and "is in use by another p3s-batch run" in second.stderr
        wait_until(lambda: "running" in {r.status for r in ledger_state(out)[0].values()})
        time.sleep(0.4)  # the prompt is on the server
        running = {r.id: r.prompt_id for r in ledger_state(out)[0].values() if r.status == "running"}
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.kill()
        first.wait(timeout=30)
    assert len(running) == 1

    resumed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    rows, attempts = ledger_state(out)
    assert all(r.status == "success" for r in rows.values()) and len(rows) == 3
    ((item_id, prompt_id),) = running.items()
    assert rows[item_id].prompt_id == prompt_id, "the prompt in flight was adopted, not queued again"
    assert len(client.get_json("/history")) - before == 3, "the server ran each item once"
    assert sorted(a["item_id"] for a in attempts if a["outcome"] == "success") == ["d0", "d1", "d2"]
