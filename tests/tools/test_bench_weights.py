"""``python -m benchmarks.bench_weights --size tiny --json``: the issue's figures, per scope, in one process."""

from __future__ import annotations

from .json_module import run_module_json


def test_bench_weights_prints_file_sampling_and_training_figures_per_scope():
    result = run_module_json("benchmarks.bench_weights", "--size", "tiny", "--json")
    scopes = {"full", "attention", "lora", "injection", "injection_full_layers"}
    assert set(result["file_mb"]) == set(result["sampling_peak_ratio"]) == scopes
    assert set(result["training_peak_gb"]) == scopes - {"full"} | {"today_injection"}
    assert result["file_mb"]["injection"] < result["file_mb"]["attention"] < result["file_mb"]["full"]
    assert result["sampling_peak_ratio"]["injection"] < result["sampling_peak_ratio"]["full"]
    assert result["injection_training_saving_unets"] > 0.5  # the whole copy of format 1 is gone
