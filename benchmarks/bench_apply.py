"""Per-step sampling cost of P3S Apply next to the plain model and a ComfyUI ControlNet.

Not a test: prints a table. Every variant samples the same seeded latent with euler and CFG
(cond + uncond batched per step) on the same randomly initialised SD1.5-shaped model:

- plain            the base model alone
- p3s_every_step   P3S, constant schedule (copy runs every step), cond rows only
- p3s_half_skipped P3S, schedule 0 for the first half of the steps (copy skipped there)
- p3s_all_rows     P3S, constant schedule, also on the uncond rows
- controlnet       a ComfyUI ControlNet of the same base on cond and uncond (ControlNetApply style)

Timings: all variants in one process, interleaved round by round (median, min, max per step;
ratios to plain by median and by min, the min being the steadier on a shared machine).
Memory: each variant again in its own process, so that the peak is its own: on CUDA the peak
allocated memory while sampling, on CPU the process's peak RSS; ``models_mib`` is the RSS the
models added.

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


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


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


def build_variants(names: list[str], size: str, latent: int) -> dict:
    """Base model, one shared P3S model, one ControlNet, as ``{variant: (model, positive, negative)}``."""
    from devtools.comfy_inprocess import import_comfy

    import_comfy()
    import comfy.model_management
    import torch

    from devtools.pack_modules import import_pack_module
    from devtools.tiny_models import tiny_sd15_patcher

    patching = import_pack_module("nodes.p3s_patching")
    channels, context_dim = SIZES[size]
    base = tiny_sd15_patcher(model_channels=channels, context_dim=context_dim, seed=0)
    device = comfy.model_management.get_torch_device()
    gen = torch.Generator().manual_seed(3)
    positive = [[torch.randn(1, 77, context_dim, generator=gen), {}]]
    negative = [[torch.randn(1, 77, context_dim, generator=gen), {}]]
    copy_runs: list[int] = []
    p3s = None
    if any(n.startswith("p3s") for n in names):
        p3s = patching.new_p3s_model(base, {"token_dim": 1024})
        for param in p3s.injection.parameters():
            torch.nn.init.normal_(param, std=0.01)
        p3s.copy.register_forward_pre_hook(lambda _m, _a: copy_runs.append(1))
    hint = torch.randn(1, 4, latent, latent, generator=gen)
    variants = {}
    for name in names:
        if name == "plain":
            variants[name] = (base, positive, negative)
        elif name == "controlnet":
            variants[name] = (base, *_controlnet_cond(base, positive, negative, latent, device))
        else:
            schedule = HalfSchedule() if name == "p3s_half_skipped" else None
            model = patching.apply_p3s(base, p3s, hint, schedule=schedule, apply_to_uncond=name == "p3s_all_rows")
            variants[name] = (model, positive, negative)
    return {"variants": variants, "copy_runs": copy_runs, "device": device}


def sample_once(setup: dict, name: str, latent: int, steps: int) -> tuple[float, int]:
    """Seconds for one sampling of ``steps`` steps, and how often the P3S copy ran."""
    import comfy.sample
    import torch

    model, positive, negative = setup["variants"][name]
    noise = torch.randn(1, 4, latent, latent, generator=torch.Generator().manual_seed(1))
    setup["copy_runs"].clear()
    start = time.perf_counter()
    comfy.sample.sample(
        model,
        noise,
        steps,
        5.0,
        "euler",
        "normal",
        positive,
        negative,
        torch.zeros_like(noise),
        seed=1,
        disable_pbar=True,
    )
    if setup["device"].type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, len(setup["copy_runs"])


def measure_memory(name: str, size: str, latent: int, steps: int) -> dict:
    """In a fresh process: peak memory of building and sampling one variant."""
    import torch

    rss_before = _rss_mib()
    setup = build_variants([name], size, latent)
    rss_built = _rss_mib()
    if setup["device"].type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sample_once(setup, name, latent, steps)
    # VmHWM, not ru_maxrss: the latter survives fork + exec and would report the parent's peak.
    peak = _peak_rss_mib()
    result = {"variant": name, "peak_rss_mib": peak, "models_mib": rss_built - rss_before}
    if setup["device"].type == "cuda":
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
    parser.add_argument("--no-timing", dest="timing", action="store_false", help="memory table only")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the memory processes")
    parser.add_argument("--only", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.only:
        print(json.dumps(measure_memory(args.only, args.size, args.latent, args.steps)))
        return 0

    names = args.variants.split(",")
    times: dict[str, list[float]] = {n: [float("nan")] for n in names}
    runs: dict[str, int] = dict.fromkeys(names, -1)
    if args.timing:
        setup = build_variants(names, args.size, args.latent)
        for name in names:  # warm-up: loads every model once
            sample_once(setup, name, args.latent, args.steps)
        times = {n: [] for n in names}
        for _ in range(args.repeats):  # interleaved, so that load changes hit every variant alike
            for name in names:
                seconds, runs[name] = sample_once(setup, name, args.latent, args.steps)
                times[name].append(seconds)
        del setup

    memory = {}
    if args.memory:
        for name in names:
            cmd = [
                sys.executable,
                "-m",
                "benchmarks.bench_apply",
                "--only",
                name,
                "--size",
                args.size,
                "--latent",
                str(args.latent),
                "--steps",
                str(args.steps),
                "--threads",
                str(args.threads),
            ]
            out = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
            memory[name] = json.loads(out.strip().splitlines()[-1])

    plain = statistics.median(times["plain"]) if "plain" in times else None
    plain_min = min(times["plain"]) if "plain" in times else None
    print(
        f"size={args.size} latent={args.latent}x{args.latent} steps={args.steps} repeats={args.repeats} "
        f"threads={args.threads or 'default'} device={setup_device()} cfg=5 (cond+uncond batched)"
    )
    mem_key = "peak_cuda_mib" if any("peak_cuda_mib" in m for m in memory.values()) else "peak_rss_mib"
    print(
        f"{'variant':<18}{'ms/step':>10}{'min':>9}{'max':>9}{'x plain':>9}{'x (min)':>9}{'copy runs':>11}"
        f"{mem_key:>15}{'models_mib':>12}"
    )
    for name in names:
        med = statistics.median(times[name])
        ratio = f"{med / plain:.2f}" if plain else "-"
        ratio_min = f"{min(times[name]) / plain_min:.2f}" if plain_min else "-"
        mem = memory.get(name, {})
        print(
            f"{name:<18}{1000 * med / args.steps:>10.1f}{1000 * min(times[name]) / args.steps:>9.1f}"
            f"{1000 * max(times[name]) / args.steps:>9.1f}{ratio:>9}{ratio_min:>9}{runs[name]:>11}"
            f"{mem.get(mem_key, float('nan')):>15.0f}{mem.get('models_mib', float('nan')):>12.0f}"
        )
    return 0


def setup_device() -> str:
    from devtools.comfy_inprocess import import_comfy

    import_comfy()
    import comfy.model_management

    return str(comfy.model_management.get_torch_device())


if __name__ == "__main__":
    raise SystemExit(main())
