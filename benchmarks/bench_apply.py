"""Per-step sampling cost of P3S Apply next to the plain model and a ComfyUI ControlNet.

Not a test: prints a table. Every variant samples the same seeded latent with euler and CFG
(cond + uncond batched per step) on the same randomly initialised SD1.5-shaped model:

- plain            the base model alone
- p3s_every_step   P3S, constant schedule (copy runs every step), cond rows only
- p3s_half_skipped P3S, schedule 0 for the first half of the steps (copy skipped there)
- p3s_all_rows     P3S, constant schedule, also on the uncond rows
- controlnet       a ComfyUI ControlNet of the same base on cond and uncond (ControlNetApply style)

Each variant runs in its own process so that peak memory is its own: on CUDA the peak
allocated memory, on CPU the process's peak RSS and its growth while sampling.

    python -m benchmarks.bench_apply --size tiny --latent 8 --steps 10
    python -m benchmarks.bench_apply --size sd15 --latent 8 --steps 4 --repeats 1
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

VARIANTS = ["plain", "p3s_every_step", "p3s_half_skipped", "p3s_all_rows", "controlnet"]
SIZES = {"tiny": (32, 32), "sd15": (320, 768)}  # model_channels, context_dim


class HalfSchedule:
    """w = 0 for the first half of denoising, 1 after."""

    def weight(self, progress: float) -> float:
        return 0.0 if progress < 0.5 else 1.0


def _rss_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def _controlnet_cond(base, positive, negative, latent_side: int, device):
    import comfy.cldm.cldm
    import comfy.controlnet
    import comfy.ops
    import torch

    from devtools.tiny_models import init_parameters

    config = dict(base.model.model_config.unet_config)
    config.pop("out_channels")
    config.update(hint_channels=3, operations=comfy.ops.disable_weight_init, device=device)
    control_model = comfy.cldm.cldm.ControlNet(**config)
    init_parameters(control_model, 21)
    control = comfy.controlnet.ControlNet(control_model, load_device=device)
    image = torch.rand(1, 3, latent_side * 8, latent_side * 8, generator=torch.Generator().manual_seed(2))
    hinted = control.copy().set_cond_hint(image, 1.0, (0.0, 1.0))

    def attach(conds):
        return [[c, {**extra, "control": hinted}] for c, extra in conds]

    return attach(positive), attach(negative)


def run_variant(variant: str, size: str, latent: int, steps: int, repeats: int) -> dict:
    """Build the models, warm up, then time ``repeats`` samplings of ``steps`` steps."""
    from devtools.comfy_inprocess import import_comfy

    import_comfy()
    import comfy.model_management
    import comfy.sample
    import torch

    from devtools.pack_modules import pack_module
    from devtools.tiny_models import tiny_sd15_patcher

    patching = pack_module("nodes.p3s_patching")
    channels, context_dim = SIZES[size]
    base = tiny_sd15_patcher(model_channels=channels, context_dim=context_dim, seed=0)
    device = comfy.model_management.get_torch_device()
    gen = torch.Generator().manual_seed(3)
    positive = [[torch.randn(1, 77, context_dim, generator=gen), {}]]
    negative = [[torch.randn(1, 77, context_dim, generator=gen), {}]]
    model, copy_runs = base, []
    if variant.startswith("p3s"):
        p3s = patching.new_p3s_model(base, {"token_dim": 1024})
        for param in p3s.injection.parameters():
            torch.nn.init.normal_(param, std=0.01)
        p3s.copy.register_forward_pre_hook(lambda _m, _a: copy_runs.append(1))
        hint = torch.randn(1, 4, latent, latent, generator=gen)
        schedule = HalfSchedule() if variant == "p3s_half_skipped" else None
        model = patching.apply_p3s(
            base, p3s, hint, schedule=schedule, apply_to_uncond=variant == "p3s_all_rows"
        )
    elif variant == "controlnet":
        positive, negative = _controlnet_cond(base, positive, negative, latent, device)

    noise = torch.randn(1, 4, latent, latent, generator=torch.Generator().manual_seed(1))
    empty = torch.zeros_like(noise)

    def once() -> float:
        start = time.perf_counter()
        comfy.sample.sample(
            model, noise, steps, 5.0, "euler", "normal", positive, negative, empty, seed=1, disable_pbar=True
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    rss_before = _rss_mib()
    once()  # warm-up: loads the models
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    copy_runs.clear()
    times = [once() for _ in range(repeats)]
    result = {
        "variant": variant,
        "ms_per_step": 1000.0 * statistics.median(times) / steps,
        "copy_runs_per_sampling": len(copy_runs) / repeats,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "rss_growth_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 - rss_before,
    }
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--latent", type=int, default=8, help="latent side (pixels / 8)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--only", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.only:
        print(json.dumps(run_variant(args.only, args.size, args.latent, args.steps, args.repeats)))
        return 0

    rows = []
    for variant in args.variants.split(","):
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.bench_apply",
            "--only",
            variant,
            "--size",
            args.size,
            "--latent",
            str(args.latent),
            "--steps",
            str(args.steps),
            "--repeats",
            str(args.repeats),
            "--threads",
            str(args.threads),
        ]
        out = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(f"  done: {variant}", file=sys.stderr)

    plain = next((r["ms_per_step"] for r in rows if r["variant"] == "plain"), None)
    print(
        f"size={args.size} latent={args.latent}x{args.latent} steps={args.steps} repeats={args.repeats} "
        f"threads={args.threads or 'default'} cfg=5 (cond+uncond batched)"
    )
    memory = "peak_cuda_mib" if "peak_cuda_mib" in rows[0] else "peak_rss_mib"
    print(f"{'variant':<18}{'ms/step':>10}{'x plain':>9}{'copy runs':>11}{memory:>15}{'rss growth':>12}")
    for r in rows:
        ratio = f"{r['ms_per_step'] / plain:.2f}" if plain else "-"
        print(
            f"{r['variant']:<18}{r['ms_per_step']:>10.1f}{ratio:>9}{r['copy_runs_per_sampling']:>11.0f}"
            f"{r[memory]:>15.0f}{r['rss_growth_mib']:>12.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
