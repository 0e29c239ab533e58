"""Step time and peak memory of P3S training per scope (full, attention, injection).

Not a test: prints one JSON line per scope and the ratios against ``full`` from the same run.
Each scope runs in its own process so that its peak memory is its own (peak RSS on CPU, peak
allocated on CUDA); the first step (warm-up) is left out of the timing.

    python -m benchmarks.bench_finetune --channels 32 --latent 8 --steps 6
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

SCOPES = ["full", "attention", "injection"]


def run_one(scope: str, channels: int, latent: int, steps: int, checkpointing: bool) -> dict:
    import torch

    from devtools.pack_modules import import_pack_module
    from devtools.tiny_models import tiny_sd15_patcher

    torch.set_num_threads(1)
    patching = import_pack_module("nodes.p3s_patching")
    training_loop = import_pack_module("p3s_core.training.loop")
    training_optimiser = import_pack_module("p3s_core.training.optimiser")
    training_settings = import_pack_module("p3s_core.training.settings")
    context = 32 if channels < 320 else 768
    base = tiny_sd15_patcher(model_channels=channels, context_dim=context)
    rss_models = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    p3s = patching.new_p3s_model(base, {"token_dim": 16, "inner_dim": 16, "heads": 2})
    gen = torch.Generator().manual_seed(0)
    data = training_settings.TrainingData(
        torch.randn(2, 4, latent, latent, generator=gen),
        torch.randn(2, 17, 16, generator=gen),
        torch.ones(2, 4, 4),
        torch.randn(2, 7, context, generator=gen),
        torch.randn(1, 7, context, generator=gen),
    )
    times: list[float] = []
    last = [time.perf_counter()]

    def on_step(step, total, history):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    settings = training_settings.TrainSettings(
        epochs=max(1, steps // 2), lr=1e-5, scope=scope, gradient_checkpointing=checkpointing
    )
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    training_loop.train_p3s(
        p3s, base.model.diffusion_model, base.get_model_object("model_sampling").sigmas, data, settings, on_step
    )
    trainable = sum(p.numel() for p in training_optimiser.trainable_parameters(p3s, scope).values())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "scope": scope,
        "checkpointing": checkpointing,
        "trainable_params": trainable,
        "step_s_median": round(statistics.median(times[1:] or times), 4),
        "peak_rss_mib": round(peak / 1024, 1),
        "training_rss_mib": round((peak - rss_models) / 1024, 1),
        "cuda_peak_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--latent", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--one", choices=SCOPES)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.channels, args.latent, args.steps, args.checkpointing)))
        return
    results = []
    for scope in SCOPES:
        cmd = [sys.executable, "-m", "benchmarks.bench_finetune", "--one", scope]
        cmd += ["--channels", str(args.channels), "--latent", str(args.latent), "--steps", str(args.steps)]
        cmd += ["--checkpointing"] if args.checkpointing else []
        out = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    full = results[0]
    for row in results:
        row["step_vs_full"] = round(row["step_s_median"] / full["step_s_median"], 2)
        row["training_mem_vs_full"] = round(row["training_rss_mib"] / max(full["training_rss_mib"], 1e-9), 2)
        print(json.dumps(row))


if __name__ == "__main__":
    main()
