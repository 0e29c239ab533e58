"""p3s-batch on the Ray engine, embedded: the quick version of benchmarks/bench_batch.

Two CPU ComfyUI servers launched as Ray actors; mid-run one server's ComfyUI is SIGKILLed (its
actor starts it again) and the other's actor is killed (Ray restarts it, and it starts its
ComfyUI). Every item must end succeeded once, with its output, none lost.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from devtools.comfy_host import REPO_ROOT

pytestmark = pytest.mark.host


def test_ten_items_survive_a_killed_server_and_a_killed_actor():
    command = [sys.executable, "-m", "benchmarks.bench_batch", "--json", "--quick", "--kill-actor"]
    command += ["--items", "10", "--workflow", "slow"]
    run = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=420)
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert run.returncode == 0, run.stderr[-4000:]
    assert (report["items"], report["succeeded"], report["failed"], report["lost"]) == (10, 10, 0, 0)
    assert report["duplicates"] == 0 and report["outputs_complete"] is True
    assert (report["killed_servers"], report["killed_actors"]) == (1, 1)
    assert report["restarted_servers"] >= 1 and report["requeued"] >= 2
    assert report["retired_workers"] == 0, "the killed actor came back (Ray restarted it) and was not given up"
    assert set(report["items_per_min"]) == {"2"}
