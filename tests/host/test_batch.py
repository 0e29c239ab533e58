"""p3s-batch against the real ComfyUI host: the selection workflow queued once per item."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from devtools.api_client import ComfyClient
from devtools.comfy_host import REPO_ROOT, ComfyServer
from devtools.sample_scene import LEFT_CENTRE, RIGHT_CENTRE, disc_mask, twin_points_json, write_twin_scene
from devtools.workflows import selection_workflow
from p3s_batch.cli import BatchOptions, run_batch
from p3s_batch.items import load_items, load_workflow
from p3s_batch.ledger import Ledger

from .conftest import CLIP_NAME, SCENE_NAME

pytestmark = pytest.mark.host

SUBJECT_NODE = "8"  # SaveImage of the subject mask in selection_workflow
RIGHT_TWIN = json.dumps(
    {
        "version": 1,
        "images": [{"positive": [[RIGHT_CENTRE[0] / 320, RIGHT_CENTRE[1] / 192]], "negative": []}],
    }
)
NO_POSITIVE = '{"images": [{"positive": [], "negative": [[0.5, 0.5]]}]}'


@pytest.fixture(scope="module")
def workflow_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("batch") / "selection.api.json"
    path.write_text(json.dumps(selection_workflow(SCENE_NAME, twin_points_json(), CLIP_NAME, prefix="batch")))
    return path


def csv_items(folder: Path, rows: list[dict[str, str]]) -> Path:
    """An items CSV with the union of the rows' columns (empty cells keep the workflow's value)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = [",".join(columns)] + [",".join(_cell(row.get(c, "")) for c in columns) for row in rows]
    path = folder / "items.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _cell(value: str) -> str:
    return '"' + value.replace('"', '""') + '"' if any(ch in value for ch in ',"\n') else value


def successes(out: Path) -> set[str]:
    """The ids of the items the ledger has as succeeded (none while the ledger is not there yet)."""
    try:
        with Ledger(out, lock=False) as ledger:
            return {item.id for item in ledger.items().values() if item.status == "success"}
    except FileNotFoundError:  # not there yet
        return set()


def history_count(client: ComfyClient) -> int:
    return len(client.get_json("/history"))


def subject_mask(out: Path, record) -> np.ndarray:
    (name,) = [f for f in record.outputs if Path(f).name.startswith(f"{SUBJECT_NODE}_")]
    return np.asarray(Image.open(out / name).convert("L")) > 127


def test_items_run_on_two_servers_with_their_overrides_and_a_failure_is_reported(
    client: ComfyClient, comfy_server: ComfyServer, workflow_file: Path, tmp_path: Path
):
    write_twin_scene(tmp_path / "refs" / "scene.png")
    items_file = csv_items(
        tmp_path,
        [
            {"id": "left", "4.dilation": "4"},
            {"id": "right", "2.points": RIGHT_TWIN, "@image:1.image": "refs/scene.png"},
            {"id": "broken", "2.points": NO_POSITIVE},
        ],
    )
    workflow = load_workflow(workflow_file)
    items = load_items(items_file, workflow)
    servers = [comfy_server.url, f"http://localhost:{comfy_server.port}"]  # two workers, one host process
    before = history_count(client)
    lines: list[str] = []
    out = tmp_path / "out"
    summary = run_batch(workflow, items, out, BatchOptions(servers=servers, retries=1, backoff=0.0), log=lines.append)

    assert (summary.succeeded, summary.failed, summary.retries, summary.skipped) == (2, 1, 1, 0)
    assert history_count(client) - before == 4, "3 items + 1 retry of the failing one were queued"
    with Ledger(out, lock=False) as ledger:
        records, attempts = ledger.items(), ledger.attempts()
    assert set(records) == {"left", "right", "broken"}
    assert {a["server"] for a in attempts} == set(servers)
    left, right, broken = records["left"], records["right"], records["broken"]
    assert left.status == right.status == "success" and left.attempts == 1
    assert left.params == {"4.dilation": "4"} and right.params["@image:1.image"] == "refs/scene.png"
    for record in (left, right):
        assert len(record.outputs) >= 4 and all((out / f).is_file() for f in record.outputs)
    # The overrides reached the server: each item's mask holds the twin its points picked.
    left_mask, right_mask = subject_mask(out, left), subject_mask(out, right)
    assert left_mask[disc_mask(LEFT_CENTRE)].mean() > 0.95 and not left_mask[disc_mask(RIGHT_CENTRE)].any()
    assert right_mask[disc_mask(RIGHT_CENTRE)].mean() > 0.95 and not right_mask[disc_mask(LEFT_CENTRE)].any()
    uploaded = list((comfy_server.base_dir / "input").glob("p3s_batch_*_scene.png"))
    assert len(uploaded) == 1, "the reference image was uploaded under a content-hashed name"
    assert broken.status == "failed" and broken.attempts == 2 and broken.outputs == []
    assert "No positive point on image 1" in broken.error and "P3SPoints (node 2)" in broken.error
    assert not (out / "broken").exists()
    assert sum(line.startswith("[") for line in lines) == 3, "one progress line per item"
    assert "2 ok, 1 failed, 0 skipped (done before), 1 retry" in lines[-1]


def test_a_limited_run_resumes_without_redoing_finished_items(client: ComfyClient, workflow_file: Path, tmp_path: Path):
    # Only the inpainting radius varies, so ComfyUI's cache keeps the mask and each item is quick.
    rows = [{"id": f"r{r}", "5.radius": str(r)} for r in (2, 3, 4)]
    workflow = load_workflow(workflow_file)
    items = load_items(csv_items(tmp_path, rows), workflow)
    out = tmp_path / "out"
    options = BatchOptions(servers=[client.url], retries=0, limit=1)
    first = run_batch(workflow, items, out, options, log=lambda _: None)
    assert (first.succeeded, first.failed) == (1, 0)

    before = history_count(client)
    lines: list[str] = []
    second = run_batch(workflow, items, out, BatchOptions(servers=[client.url], retries=0), log=lines.append)
    assert (second.succeeded, second.skipped) == (2, 1)
    assert history_count(client) - before == 2, "only the two unfinished items were queued"
    with Ledger(out, lock=False) as ledger:
        assert sorted(a["item_id"] for a in ledger.attempts()) == ["r2", "r3", "r4"], "each item ran exactly once"
    assert "1 done before, 2 to run" in lines[0]

    # A changed parameter makes that item pending again; the others stay done.
    rows[1]["5.radius"] = "7"
    changed = load_items(csv_items(tmp_path, rows), workflow)
    third = run_batch(workflow, changed, out, BatchOptions(servers=[client.url], retries=0), log=lambda _: None)
    assert (third.succeeded, third.skipped) == (1, 2)
    with Ledger(out, lock=False) as ledger:
        assert ledger.item("r3").params == {"5.radius": "7"} and ledger.item("r3").status == "success"


def test_a_killed_cli_run_is_resumed_by_the_same_command(client: ComfyClient, workflow_file: Path, tmp_path: Path):
    # The mask's sigma varies, so each item computes a new mask and the kill lands mid-batch.
    rows = [{"id": f"s{i}", "4.sigma": str(0.8 + 0.1 * i)} for i in range(3)]
    items_file = csv_items(tmp_path, rows)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "p3s_batch", str(workflow_file), str(items_file), "-o", str(out)]
    command += ["--server", client.url, "--retries", "0"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not successes(out) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    done_before = successes(out)
    assert done_before, "the first run finished at least one item before it was killed"

    resumed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"{len(done_before)} done before, {3 - len(done_before)} to run" in resumed.stdout
    with Ledger(out, lock=False) as ledger:
        successful = [a["item_id"] for a in ledger.attempts() if a["outcome"] == "success"]
    assert sorted(successful) == [f"s{i}" for i in range(3)], "no finished item ran again"


def test_an_item_with_invalid_inputs_is_reported_not_half_run(client: ComfyClient, workflow_file: Path, tmp_path: Path):
    # No output node is valid without the CLIP vision model: ComfyUI refuses the prompt with its node errors.
    workflow = load_workflow(workflow_file)
    items = load_items(csv_items(tmp_path, [{"id": "no-clip", "3.clip_name": "absent.safetensors"}]), workflow)
    summary = run_batch(workflow, items, tmp_path / "out", BatchOptions(servers=[client.url], retries=0), log=print)
    assert (summary.succeeded, summary.failed) == (0, 1)
    with Ledger(tmp_path / "out", lock=False) as ledger:
        (record,) = ledger.items().values()
    assert record.error.startswith("invalid inputs, not run: node 3 (CLIPVisionLoader)")
    assert "absent.safetensors" in record.error and record.outputs == []
