"""``python -m benchmarks.bench_weights --size tiny --json``: the issue's figures, per scope, in one process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_bench_weights_prints_file_sampling_and_training_figures_per_scope():
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_weights", "--size", "tiny", "--json"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    scopes = {"full", "attention", "lora", "injection", "injection_full_layers"}
    assert set(result["file_mb"]) == set(result["sampling_peak_ratio"]) == scopes
    assert set(result["training_peak_gb"]) == scopes - {"full"} | {"today_injection"}
    assert result["file_mb"]["injection"] < result["file_mb"]["attention"] < result["file_mb"]["full"]
    assert result["sampling_peak_ratio"]["injection"] < result["sampling_peak_ratio"]["full"]
    assert result["injection_training_saving_unets"] > 0.5  # the whole copy of format 1 is gone
