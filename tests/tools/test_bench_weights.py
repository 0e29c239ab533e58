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
    assert "estimated" not in result, "every SD1.5 figure is measured"


def test_bench_weights_on_sdxl_labels_its_training_figures_as_auto_estimates():
    result = run_module_json("benchmarks.bench_weights", "--base", "sdxl", "--size", "tiny", "--json")
    scopes = {"full", "attention", "lora", "injection"}
    assert result["base"] == "sdxl" and result["estimated"] is True
    assert result["estimated_figures"] == ["training_peak_gb"]
    assert set(result["file_mb"]) == set(result["sampling_peak_ratio"]) == scopes | {"injection_full_layers"}
    assert set(result["training_peak_gb"]) == set(result["training_estimate_gb"]) == scopes
    weights = {result["training_peak_gb"][s] - result["training_estimate_gb"][s] for s in scopes}
    assert max(weights) - min(weights) < 0.025 and min(weights) > 0, "the same base weights on top of each estimate"
    assert result["file_mb"]["injection"] < result["file_mb"]["lora"] < result["file_mb"]["full"]
    estimate = result["training_peak_gb"]
    assert estimate["injection"] == min(estimate.values()) and estimate["full"] == max(estimate.values())


def test_bench_activations_measures_both_bases_with_and_without_checkpointing():
    result = run_module_json("benchmarks.bench_activations", "--size", "tiny", "--json")
    for base in ("sd15", "sdxl"):
        measured = result["mib_per_latent_pixel"][base]
        assert 0 < measured["checkpointed"] < measured["plain"], "checkpointing keeps less per pixel"
    assert set(result["sdxl_over_sd15"]) == {"plain", "checkpointed"}
