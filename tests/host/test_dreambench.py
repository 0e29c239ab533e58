"""The DreamBench run end to end against the real ComfyUI host and the stand-in models: a
two-subject dataset of one photo each (one with points, one on whole images), 2 prompts x 1 image, the driver
SIGKILLed once after its first training and resumed by the same command."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.comfy_host import REPO_ROOT, ComfyServer
from devtools.fake_dreambench import SUBJECTS, write_fake_dreambench
from p3s_batch.dreambench import run_key
from p3s_batch.ledger import Ledger

from .conftest import CHECKPOINT_NAME, CLIP_NAME

pytestmark = pytest.mark.host

# The tiny CLIP/DINO need the torchvision stand-in of this machine's CPU torch, as the scoring tests do.
DRIVER = (
    "import sys; from devtools.launch_comfyui import declare_torchvision_ops; declare_torchvision_ops(); "
    "from p3s_batch.cli import main; sys.exit(main(sys.argv[1:]))"
)


def attempts(stage: Path) -> list[dict]:
    try:
        with Ledger(stage, lock=False) as ledger:
            return ledger.attempts()
    except FileNotFoundError:  # not there yet
        return []


def test_a_two_subject_run_killed_once_resumes_without_duplicates(
    comfy_server: ComfyServer, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
):
    from devtools.launch_comfyui import declare_torchvision_ops

    declare_torchvision_ops()
    from devtools.tiny_eval_models import write_tiny_eval_set

    eval_dir = write_tiny_eval_set(tmp_path_factory.mktemp("p3s_eval"))["root"]
    dataset = write_fake_dreambench(tmp_path, images=1)  # one photo each: the training is the slow part
    points = tmp_path / "points.json"
    points.write_text(json.dumps({"red_disc": [{"positive": [[0.5, 0.5]], "negative": [[0.1, 0.1]]}]}))
    out = tmp_path / "out"
    command = [sys.executable, "-c", DRIVER, "dreambench", str(dataset), "-o", str(out), "--server", comfy_server.url]
    command += ["--points", str(points), "--prompts", "2", "--images-per-prompt", "1", "--seed", "40"]
    command += ["--epochs", "1", "--resolution", "64", "--scope", "injection", "--steps", "2", "--size", "64"]
    command += ["--reference-size", "64", "--checkpoint", CHECKPOINT_NAME, "--clip-vision", CLIP_NAME]
    command += ["--eval-models", str(eval_dir), "--retries", "0", "--no-progress"]
    first_subject = next(iter(SUBJECTS))

    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while process.poll() is None and time.monotonic() < deadline:
        if any(a["outcome"] == "success" for a in attempts(out / first_subject / "train")):
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert not (out / "dreambench.csv").exists(), "killed mid-run: " + (process.stdout.read() or "")

    resumed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "1 done before, 0 to run" in resumed.stdout, "the first subject's training was not redone"

    for subject in SUBJECTS:
        for stage, count in (("train", 1), ("generate", 2)):
            done = [a["item_id"] for a in attempts(out / subject / stage) if a["outcome"] == "success"]
            assert len(done) == len(set(done)) == count, f"{subject} {stage}: each item succeeded exactly once"
        model = comfy_server.base_dir / "models" / "p3s" / "p3s_dreambench" / run_key(out) / f"{subject}.safetensors"
        assert model.is_file()
        with (out / subject / "scores.csv").open() as handle:
            images = list(csv.DictReader(handle))
        assert [(r["prompt_index"], r["seed"]) for r in images] == [("0", "40"), ("1", "140")]
        assert all("sks" in r["prompt"] and "sks" not in r["clip_t_prompt"] for r in images)
        assert "Seeds:" in (out / subject / "scores.md").read_text()

    with (out / "dreambench.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["subject"] for r in rows] == [*SUBJECTS, "overall"]
    assert [r["selection"] for r in rows[:2]] == ["points", "whole image"] and rows[1]["kind"] == "live"
    assert all(r["train_seed"] == "0" and r["seed_base"] == "40" for r in rows)
    assert all(-1 <= float(r[m]) <= 1 for r in rows for m in ("clip_i", "clip_t", "dino"))
    assert all(float(r["clip_i_var"]) >= 0 and float(r["dino_var"]) >= 0 for r in rows)
    assert rows[2]["images"] == "4" and rows[0]["protocol"] == "no", "the tiny backbones are not the protocol's"
    markdown = (out / "dreambench.md").read_text()
    assert "| **overall** |" in markdown and "Seeds: P3S Fine-tune seed 0" in markdown
    assert "NOT the DreamBench protocol" in markdown and "| CLIP-Iv | DINO-v |" in markdown
    assert not list(out.rglob("*.partial")), "no half-written file left"

    again = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout.count("scored before") == 2, again.stdout + again.stderr
