"""``benchmarks/gpu_suite.py --cpu --tiny`` runs every section on the CPU and passes its own checks."""

from __future__ import annotations

from .json_module import run_module_json


def test_gpu_suite_runs_on_the_cpu_with_the_tiny_model():
    result = run_module_json("benchmarks.gpu_suite", "--cpu", "--tiny", "--json")
    assert result["failures"] == []
    rows = result["rows"]
    matrix = {(r["base"], r["maker"]) for r in rows["dtype matrix"]}
    assert matrix == {(b, m) for b in ("fp16", "bf16", "fp8", "fp32") for m in ("Init", "Fine-tune", "Loader")}
    assert all(r["equal_plain"] for r in rows["dtype matrix"] if r["maker"] == "Init")
    assert {r["mode"] for r in rows["vram modes"]} == {"lowvram"}, "a VRAM mode ran in its own process"
    assert {r["scope"] for r in rows["training"]} == {"full", "attention", "lora", "injection"}
    assert all(r["peak_mib"] > 0 for r in rows["training"])
    assert {r["variant"] for r in rows["sampling"]} == {"plain", "p3s", "controlnet"}
    resume = rows["resume"][0]
    assert resume["same_scale"] and resume["straight_vs_resumed"] == 0.0, "bit-identical on the CPU"
    assert rows["fp32 auto"][0]["precision_used"] == "fp32" and rows["fp32 auto"][0]["finite"]
    assert {r["variant"] for r in rows["capture syncs"]} == {"p3s", "p3s + capture"}
    assert all(r["p3s_syncs_per_step"] >= r["plain_syncs_per_step"] for r in rows["vram modes"])
    assert [r["scope"] for r in rows["sdxl sampling"]] == ["plain", "injection", "lora"]
    sdxl_training = rows["sdxl training"]
    assert {r["scope"] for r in sdxl_training} == {"injection", "lora", "attention"}
    assert all(r["peak_gb"] > 0 and r["estimate_gb"] > 0 for r in sdxl_training)
