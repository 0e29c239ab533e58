"""One command for a CUDA machine: P3S across dtypes, VRAM modes, training memory and sampling speed.

Not a unit test: prints a table and exits non-zero (listing every failure) when any check fails.
On a full-size random-weight SD1.5 at 512 px (latent 64) by default; ``--cpu --tiny`` runs the
same code paths on the CPU with the tiny SD1.5-shaped model (CI runs it so the script cannot rot).

Sections:
1. dtype matrix: base fp16, bf16 (``--bf16-unet``), fp8 e4m3 storage (manual_cast), fp32 x
   (Init, Fine-tune, Loader) -> Apply + 2 sampling steps: outputs finite, an untrained (Init)
   model bit-identical to plain sampling.
2. VRAM modes, each in its own process (ComfyUI reads them at import): normal, ``--lowvram``,
   ``--novram``, ``--gpu-only``, ``--reserve-vram``: Init -> Apply -> sample, finite and equal to
   plain; a trained model differs from plain.
3. training per scope and precision: seconds per step and peak memory (CUDA
   ``max_memory_allocated``; CPU: the profiler's peak of bytes allocated during the step) with
   gradient checkpointing off and on, and on a simulated 12 GB card
   (``set_per_process_memory_fraction``; CUDA only).
4. sampling steps per second: plain, P3S (copy every step, default schedule), ComfyUI ControlNet.
5. host syncs per sampling step (CUDA: ``torch.cuda.set_sync_debug_mode``; CPU: calls of
   ``item``/``cpu``/``tolist``/``float``/``int``/``bool`` on tensors) for plain and P3S.
6. memory back to its baseline after a cancelled training and after unloading the models.
7. resume: 2 epochs straight (twice) vs 1 epoch and a resume, fp16 base on CUDA (GradScaler, fused
   AdamW): the resumed run no further from the straight one than two straight runs, same loss scale.
8. an fp32 base with ``precision`` auto: what ComfyUI's fp16 judgement makes of this card, finite loss.
9. host syncs per step with the attention-map capture on (section 2 reports them per VRAM mode:
   lowvram and novram leave the injection and hint layers on the CPU).
10. SDXL: SDXL 1.0's full-size U-Net (random weights, fp16; ``--tiny``: the tiny SDXL-shaped one)
   at 1024 px (``--sdxl-latent``): an untrained model bit-identical to plain sampling; sampling
   peak with scope ``injection`` and ``lora`` against plain; a training step's peak and seconds
   per scope with gradient checkpointing, on the whole card and on a simulated 12 GB one, beside
   scope ``auto``'s estimate of it (``measured_over_estimate``).

    python -m benchmarks.gpu_suite                 # CUDA, full size, 512 px (< 8 min on one GPU)
    python -m benchmarks.gpu_suite --cpu --tiny    # CPU smoke run (< 60 s)
    python -m benchmarks.gpu_suite --json          # one JSON object instead of the table
    python -m benchmarks.gpu_suite --section sdxl  # only the SDXL rows
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

BASES = {  # name: (storage dtype, manual_cast dtype, needs CUDA)
    "fp16": ("float16", None, False),
    "bf16": ("bfloat16", None, False),
    "fp8": ("float8_e4m3fn", "float16", False),
    "fp32": ("float32", None, False),
}
VRAM_MODES = {
    "normal": [],
    "lowvram": ["--lowvram"],
    "novram": ["--novram"],
    "gpu-only": ["--gpu-only"],
    "reserve-vram": ["--reserve-vram", "4"],
}
SCOPES = ("full", "attention", "lora", "injection")
ENCODER = {"token_dim": 1024, "inner_dim": 320, "heads": 8}
TINY_ENCODER = {"token_dim": 16, "inner_dim": 16, "heads": 2}


class Suite:
    """Collects rows per section and failures; ``check`` records a failure instead of raising."""

    def __init__(self, args):
        self.args = args
        self.rows: dict[str, list[dict]] = {}
        self.failures: list[str] = []

    def row(self, section: str, **values) -> None:
        self.rows.setdefault(section, []).append(values)

    def check(self, ok: bool, message: str) -> bool:
        if not ok:
            self.failures.append(message)
        return ok

    @contextlib.contextmanager
    def guarded(self, what: str):
        try:
            yield
        except Exception as err:  # a crash is a failure of this cell, not of the whole run
            self.failures.append(f"{what}: {type(err).__name__}: {str(err).splitlines()[0][:200]}")


def setup_comfy(args) -> None:
    """ComfyUI on sys.path with the chosen command-line flags set before model management loads."""
    from devtools.comfy_host import comfyui_dir
    from devtools.launch_comfyui import declare_torchvision_ops

    root = Path(args.comfyui or comfyui_dir())
    declare_torchvision_ops()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import comfy.cli_args

    flags = comfy.cli_args.args
    flags.cpu = bool(args.cpu)
    flags.disable_all_custom_nodes = True
    mode = VRAM_MODES.get(args.vram or "normal", [])
    flags.lowvram = "--lowvram" in mode
    flags.novram = "--novram" in mode
    flags.gpu_only = "--gpu-only" in mode
    if "--reserve-vram" in mode:
        flags.reserve_vram = float(mode[1])
    import comfy.model_management  # reads the flags now


def dims(args) -> tuple[int, int, int]:
    """model_channels, context_dim, latent side."""
    return (32, 32, args.tiny_latent) if args.tiny else (320, 768, args.latent)


def build_base(args, storage: str, compute: str | None, seed: int = 0):
    """A random-weight SD1.5-shaped MODEL stored in ``storage`` (manual_cast to ``compute``), loaded as ComfyUI does."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import torch

    from devtools.tiny_models import tiny_sd15_patcher

    channels, context, _ = dims(args)
    dtype = getattr(torch, storage)
    cast = getattr(torch, compute) if compute else None
    if args.cpu and dtype == torch.float16 and cast is None:
        cast = None  # the CPU computes fp16 too (slowly); kept plain like on a GPU
    with torch.inference_mode():
        made = tiny_sd15_patcher(channels, context, seed=seed, dtype=dtype, manual_cast_dtype=cast)
        return comfy.model_patcher.ModelPatcher(
            made.model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device()
        )


def conditioning(args, seed: int = 3):
    import torch

    _, context, _ = dims(args)
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 77, context, generator=gen), {}]], [[torch.randn(1, 77, context, generator=gen), {}]]


def sample(args, model, steps: int, positive=None, negative=None):
    import comfy.sample
    import torch

    _, _, side = dims(args)
    if positive is None:
        positive, negative = conditioning(args)
    noise = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        out = comfy.sample.sample(
            model, noise, steps, 5.0, "euler", "normal", positive, negative, torch.zeros_like(noise), seed=1,
            disable_pbar=True,
        )  # fmt: skip
    if torch.cuda.is_available() and not args.cpu:
        torch.cuda.synchronize()
    return out


def pack():
    from devtools.pack_modules import import_pack_module

    return (
        import_pack_module("nodes.p3s_patching"),
        import_pack_module("p3s_core.training.settings"),
        import_pack_module("p3s_core.training.loop"),
    )


def training_data(args, images: int = 1):

    from devtools.tiny_models import random_training_data

    _, context, side = dims(args)
    token_dim = TINY_ENCODER["token_dim"] if args.tiny else ENCODER["token_dim"]
    return random_training_data(images, side, context, token_dim, seed=4)


def hint(args):
    import torch

    _, _, side = dims(args)
    return torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(5))


def encoder(args) -> dict:
    return TINY_ENCODER if args.tiny else ENCODER


def train(args, base, scope: str, steps: int = 1, checkpointing: bool = False, precision: str = "auto", **kw):
    """A P3S model of ``scope`` trained ``steps`` steps the way P3S Fine-tune does; returns it and the history."""
    import torch

    patching, training_settings, training_loop = pack()
    from devtools.pack_modules import import_pack_module

    placement = import_pack_module("nodes.p3s_placement")
    p3s = patching.new_p3s_model(base, encoder(args), scope)
    frozen = placement.training_clone(base)
    placement.load_for_training(frozen)
    unet = frozen.model.diffusion_model
    settings = training_settings.TrainSettings(  # two images, batch 1: two optimiser steps per epoch
        epochs=max(1, math.ceil(steps / 2)), lr=1e-4, precision=precision, scope=scope,
        gradient_checkpointing=checkpointing,
    )  # fmt: skip
    with torch.inference_mode():
        history = training_loop.train_p3s(
            p3s, unet, base.get_model_object("model_sampling").sigmas, training_data(args, 2), settings,
            device=frozen.load_device, compute_dtype=placement.base_compute_dtype(base),
            frozen_context=lambda: placement.plain_ops_for_training(unet), **kw,
        )  # fmt: skip
    return p3s, history


def randomised(p3s) -> None:
    import torch

    with torch.no_grad():
        for param in p3s.injection.parameters():
            param.normal_(std=0.01)


def dtype_matrix(suite: Suite) -> None:
    """Section 1: every base dtype x every maker -> Apply + 2 steps."""
    import torch

    args = suite.args
    patching, _, _ = pack()
    from devtools.pack_modules import import_pack_module

    model_file = import_pack_module("p3s_core.model.model_file")
    for name, (storage, compute, _) in BASES.items():
        base = build_base(args, storage, compute)
        plain = sample(args, base, 2)
        trained = None
        for maker in ("Init", "Fine-tune", "Loader"):
            with suite.guarded(f"dtype {name} {maker}"):
                start = time.perf_counter()
                if maker == "Init":
                    p3s = patching.new_p3s_model(base, encoder(args), "full")
                elif maker == "Fine-tune":
                    p3s, _ = train(args, base, "attention")
                    randomised(p3s)
                    trained = p3s
                else:  # the Fine-tune's model through a file
                    p3s = trained if trained is not None else train(args, base, "attention")[0]
                    with tempfile.TemporaryDirectory() as folder:
                        path = Path(folder) / "subject.safetensors"
                        model_file.save_p3s_model(path, p3s.state_dict(), p3s.config, {})
                        tensors, info = model_file.load_p3s_model(path)
                        p3s = patching.p3s_model_from_file(base, tensors, info.config)
                out = sample(args, patching.apply_p3s(base, p3s, hint(args)), 2)
                finite = bool(torch.isfinite(out).all())
                same = bool(torch.equal(out, plain))
                suite.check(finite, f"dtype {name} {maker}: non-finite output")
                if maker == "Init":
                    suite.check(same, f"dtype {name} Init: not bit-identical to plain sampling")
                else:
                    suite.check(not same, f"dtype {name} {maker}: a trained model changed nothing")
                dtypes = sorted({str(p.dtype).replace("torch.", "") for p in p3s.parameters()})
                suite.row(
                    "dtype matrix", base=name, maker=maker, finite=finite, equal_plain=same,
                    p3s_dtype="/".join(dtypes), seconds=round(time.perf_counter() - start, 2),
                )  # fmt: skip
        del base


def vram_mode(suite: Suite) -> None:
    """Section 2 (one mode per process): Init -> Apply equal to plain, trained -> differs, all finite."""
    import torch

    args = suite.args
    patching, _, _ = pack()
    base = build_base(args, "float32" if args.cpu else "float16", None)
    plain = sample(args, base, 2)
    with suite.guarded(f"vram {args.vram}"):
        p3s = patching.new_p3s_model(base, encoder(args), "full")
        untrained = sample(args, patching.apply_p3s(base, p3s, hint(args)), 2)
        randomised(p3s)
        trained = sample(args, patching.apply_p3s(base, p3s, hint(args)), 2)
        ok = suite.check(torch.equal(untrained, plain), f"vram {args.vram}: untrained differs from plain")
        ok &= suite.check(bool(torch.isfinite(trained).all()), f"vram {args.vram}: non-finite output")
        ok &= suite.check(not torch.equal(trained, plain), f"vram {args.vram}: trained changed nothing")
        import comfy.model_management as mm

        steps = 4 if args.tiny else 10
        applied = patching.apply_p3s(base, p3s, hint(args))
        plain_syncs = count_syncs(args, lambda: sample(args, base, steps)) / steps
        p3s_syncs = count_syncs(args, lambda: sample(args, applied, steps)) / steps
        suite.row(
            "vram modes", mode=args.vram, vram_state=str(mm.vram_state.name), ok=bool(ok),
            plain_syncs_per_step=round(plain_syncs, 2), p3s_syncs_per_step=round(p3s_syncs, 2),
        )  # fmt: skip


def run_vram_modes(suite: Suite) -> None:
    """Section 2: one process per VRAM mode (ComfyUI reads them once, at import)."""
    modes = ["lowvram"] if suite.args.cpu else list(VRAM_MODES)
    for mode in modes:
        cmd = [sys.executable, "-m", "benchmarks.gpu_suite", "--section", "vram", "--vram", mode, "--json"]
        cmd += ["--cpu"] if suite.args.cpu else []
        cmd += ["--tiny", "--tiny-latent", str(suite.args.tiny_latent)] if suite.args.tiny else []
        cmd += ["--latent", str(suite.args.latent)]
        done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
        try:
            result = json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            suite.failures.append(f"vram {mode}: process failed: {done.stderr.strip().splitlines()[-1:]}")
            continue
        suite.rows.setdefault("vram modes", []).extend(result["rows"].get("vram modes", []))
        suite.failures.extend(result["failures"])


class StepPeak:
    """Peak memory of the second training step (the first allocates the AdamW state), as ``on_step``.

    CUDA: ``max_memory_allocated`` above what was allocated when step 2 began. CPU: the torch
    profiler's memory events during step 2 (bytes allocated since it began, at their peak).
    """

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.prof = None
        self.before = 0
        self.peak = float("nan")
        self.started = 0.0
        self.seconds = float("nan")

    def __call__(self, step: int, total: int, history) -> None:
        import torch

        if step == 1:
            if self.cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                self.before = torch.cuda.memory_allocated()
            else:
                from torch.profiler import ProfilerActivity, profile

                self.prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
                self.prof.start()
            self.started = time.perf_counter()
        elif step == 2:
            if self.cuda:
                torch.cuda.synchronize()
            self.seconds = time.perf_counter() - self.started
            if self.cuda:
                self.peak = torch.cuda.max_memory_allocated() - self.before
            else:
                self.prof.stop()
                self.peak = profiler_peak_bytes(self.prof)


def profiler_peak_bytes(prof) -> int:
    """The peak of "Total Allocated" over a finished CPU profile's memory events."""
    with tempfile.TemporaryDirectory() as folder:
        trace = Path(folder) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    totals = [e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]"]
    return max(totals, default=0)


def training_memory(suite: Suite) -> None:
    """Section 3: seconds and peak memory of one training step per scope, precision, checkpointing."""
    import torch

    args = suite.args
    cuda = torch.cuda.is_available() and not args.cpu
    base = build_base(args, "float32" if args.cpu else "float16", None)
    precisions = ["auto"] if args.cpu else ["auto", "fp16"]
    cards = [None, 12] if cuda else [None]
    for card in cards:
        if card is not None:
            total = torch.cuda.get_device_properties(0).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, card * 2**30 / total))
        for scope in SCOPES:
            for precision in precisions:
                peaks = {}
                for checkpointing in (False, True):
                    cell = f"training {scope} {precision} ckpt={checkpointing} card={card or 'full'}"
                    measure = StepPeak(cuda)
                    with suite.guarded(cell):
                        try:
                            train(args, base, scope, 2, checkpointing, precision, on_step=measure)
                        except torch.cuda.OutOfMemoryError:
                            measure.peak = float("inf")  # does not fit that card: a result, not a failure
                    peak, seconds = measure.peak / 2**20, measure.seconds
                    peaks[checkpointing] = peak
                    suite.row(
                        "training", scope=scope, precision=precision, checkpointing=checkpointing,
                        card=f"{card} GB" if card else "full", s_per_step=round(seconds, 3), peak_mib=round(peak, 1),
                    )  # fmt: skip
                if all(math.isfinite(p) for p in peaks.values()):
                    if not args.tiny:  # at 64 px the tiny model's activations are smaller than its gradients
                        suite.check(peaks[True] < peaks[False], f"checkpointing did not lower {scope} {precision} peak")
                    suite.row(
                        "checkpointing ratio", scope=scope, precision=precision, card=f"{card} GB" if card else "full",
                        on_over_off=round(peaks[True] / peaks[False], 3),
                    )  # fmt: skip
        if card is not None:
            torch.cuda.set_per_process_memory_fraction(1.0)


def sampling_speed(suite: Suite) -> None:
    """Sections 4 and 5: steps per second and host syncs per step, plain vs P3S vs ControlNet."""
    import torch

    from devtools.tiny_models import controlnet_for, with_control

    args = suite.args
    patching, _, _ = pack()
    base = build_base(args, "float32" if args.cpu else "float16", None)
    steps = 4 if args.tiny else 20
    p3s = patching.new_p3s_model(base, encoder(args), "full")
    randomised(p3s)
    positive, negative = conditioning(args)
    _, _, side = dims(args)
    control = controlnet_for(base).copy()
    control.set_cond_hint(torch.rand(1, 3, side * 8, side * 8), 1.0, (0.0, 1.0))
    variants = {
        "plain": (base, positive, negative),
        "p3s": (patching.apply_p3s(base, p3s, hint(args)), positive, negative),
        "controlnet": (base, with_control(positive, control), with_control(negative, control)),
    }
    for name, (model, pos, neg) in variants.items():
        with suite.guarded(f"sampling {name}"):
            sample(args, model, 2, pos, neg)  # warm-up: loads the models
            start = time.perf_counter()
            out = sample(args, model, steps, pos, neg)
            seconds = time.perf_counter() - start
            syncs = count_syncs(args, lambda m=model, p=pos, n=neg: sample(args, m, steps, p, n))
            suite.check(bool(torch.isfinite(out).all()), f"sampling {name}: non-finite output")
            suite.row(
                "sampling", variant=name, it_per_s=round(steps / seconds, 2), syncs_per_step=round(syncs / steps, 2)
            )
    rows = {r["variant"]: r for r in suite.rows.get("sampling", [])}
    if "plain" in rows and "p3s" in rows:
        ratio = rows["plain"]["it_per_s"] / max(rows["p3s"]["it_per_s"], 1e-9)
        suite.row("sampling ratio", p3s_over_plain_seconds=round(ratio, 2))
        extra = rows["p3s"]["syncs_per_step"] - rows["plain"]["syncs_per_step"]
        suite.check(extra <= 1.5, f"P3S adds {extra:.1f} host syncs per step (at most 1 expected)")


def count_syncs(args, run) -> int:
    """Host syncs during ``run()``: CUDA's sync-debug warnings, or sync-method calls on the CPU."""
    import torch

    if torch.cuda.is_available() and not args.cpu:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                run()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)
    counter = {"n": 0}
    originals = {
        name: getattr(torch.Tensor, name) for name in ("item", "cpu", "tolist", "__float__", "__int__", "__bool__")
    }

    def counting(original):
        def method(tensor, *a, **k):
            counter["n"] += 1
            return original(tensor, *a, **k)

        return method

    try:
        for name, original in originals.items():
            setattr(torch.Tensor, name, counting(original))
        run()
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
    return counter["n"]


def memory_baseline(suite: Suite) -> None:
    """Section 6: memory after a cancelled training and after unloading equals the baseline."""
    import comfy.model_management as mm
    import torch

    args = suite.args
    cuda = torch.cuda.is_available() and not args.cpu
    base = build_base(args, "float32" if args.cpu else "float16", None)
    mm.unload_all_models()
    mm.soft_empty_cache()
    baseline = torch.cuda.memory_allocated() if cuda else 0

    def cancel(step, total, history):
        raise KeyboardInterrupt

    with suite.guarded("cancel"):
        with contextlib.suppress(KeyboardInterrupt):
            train(args, base, "full", 5, on_step=cancel)
        mm.unload_all_models()
        mm.soft_empty_cache()
        after_cancel = torch.cuda.memory_allocated() if cuda else 0
        patching, _, _ = pack()
        p3s = patching.new_p3s_model(base, encoder(args), "full")
        sample(args, patching.apply_p3s(base, p3s, hint(args)), 2)
        mm.unload_all_models()
        mm.soft_empty_cache()
        after_unload = torch.cuda.memory_allocated() if cuda else 0
        slack = 64 * 2**20
        suite.check(after_cancel - baseline <= slack, f"cancel left {(after_cancel - baseline) / 2**20:.0f} MiB")
        suite.check(after_unload - baseline <= slack, f"unload left {(after_unload - baseline) / 2**20:.0f} MiB")
        suite.row(
            "memory baseline", baseline_mib=round(baseline / 2**20, 1),
            after_cancel_mib=round(after_cancel / 2**20, 1), after_unload_mib=round(after_unload / 2**20, 1),
            measured="cuda" if cuda else "n/a on CPU (paths run)",
        )  # fmt: skip


def resume_run(suite: Suite) -> None:
    """Section 7: 2 epochs straight (twice) vs 1 epoch + resume, on the base GPU users load (fp16 on
    CUDA: GradScaler on, fused AdamW): the resumed weights differ from the straight run's no more than
    two straight runs differ from each other (CUDA's kernels add in a varying order), same loss scale."""
    import torch

    args = suite.args
    patching, _, _ = pack()
    base = build_base(args, "float32" if args.cpu else "float16", None)
    ends = {}

    def fresh():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return patching.new_p3s_model(base, encoder(args), "attention")

    def keep(run: str):
        def on_epoch(epoch, history, state):
            ends[(run, epoch)] = state()

        return on_epoch

    def stop_after_first(epoch, history, state):
        ends[("first", epoch)] = state()
        raise KeyboardInterrupt

    with suite.guarded("resume"):
        straight, again, first = fresh(), fresh(), fresh()
        train_run(args, base, straight, 2, on_epoch=keep("straight"))
        train_run(args, base, again, 2, on_epoch=keep("again"))
        with contextlib.suppress(KeyboardInterrupt):
            train_run(args, base, first, 2, on_epoch=stop_after_first)
        weights = {k: v.detach().to("cpu", copy=True) for k, v in first.state_dict().items()}
        resumed = patching.p3s_model_from_file(base, weights, first.config, torch.float32)
        train_run(args, base, resumed, 2, resume=ends[("first", 1)], on_epoch=keep("resumed"))

        def max_difference(a, b) -> float:
            sa, sb = a.state_dict(), b.state_dict()
            return max(float((sa[k].float().cpu() - sb[k].float().cpu()).abs().max()) for k in sa)

        noise = max_difference(straight, again)
        resumed_diff = max_difference(straight, resumed)
        same_scale = ends[("resumed", 2)].scaler == ends[("straight", 2)].scaler
        suite.check(same_scale, "resume: the loss scale differs from the straight run's")
        suite.check(resumed_diff <= max(2 * noise, 1e-6), f"resume: weights {resumed_diff:.2e} from the straight run")
        suite.row(
            "resume", base="fp32" if args.cpu else "fp16", scaler=str(ends[("straight", 2)].scaler),
            straight_vs_straight=noise, straight_vs_resumed=resumed_diff, same_scale=same_scale,
        )  # fmt: skip


def train_run(args, base, p3s, epochs: int, **kw):
    """Train ``p3s`` (attention scope) for ``epochs`` epochs of two images as P3S Fine-tune does."""
    import torch

    _, training_settings, training_loop = pack()
    from devtools.pack_modules import import_pack_module

    placement = import_pack_module("nodes.p3s_placement")
    frozen = placement.training_clone(base)
    placement.load_for_training(frozen)
    unet = frozen.model.diffusion_model
    settings = training_settings.TrainSettings(epochs=epochs, lr=1e-4, seed=7, scope="attention")
    with torch.inference_mode():
        return training_loop.train_p3s(
            p3s, unet, base.get_model_object("model_sampling").sigmas, training_data(args, 2), settings,
            device=frozen.load_device, compute_dtype=placement.base_compute_dtype(base),
            frozen_context=lambda: placement.plain_ops_for_training(unet, p3s), **kw,
        )  # fmt: skip


def fp32_auto(suite: Suite) -> None:
    """Section 8: an fp32 base with precision auto: what ComfyUI's judgement makes of this card, and a
    finite loss in it (GTX 16xx / Pascal / Maxwell: fp32; T4, RTX 20: fp16 + GradScaler; else bf16)."""
    import torch

    from devtools.pack_modules import import_pack_module

    args = suite.args
    placement = import_pack_module("nodes.p3s_placement")
    precision = import_pack_module("p3s_core.training.precision")
    base = build_base(args, "float32", None)
    device = base.load_device
    used = precision.precision_used("auto", device, torch.float32, fp16_supported=placement.host_fp16_works)
    with suite.guarded("fp32 auto"):
        _, history = train(args, base, "attention", steps=2, precision=used)
        finite = all(math.isfinite(v) for v in history.total)
        suite.check(finite, f"fp32 auto ({used}): non-finite loss")
        name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
        suite.row("fp32 auto", device=name, precision_used=used, finite=finite, last_loss=round(history.total[-1], 4))


def capture_syncs(suite: Suite) -> None:
    """Section 9: host syncs per step of P3S sampling with the attention-map capture on."""
    import torch

    from devtools.pack_modules import import_pack_module

    args = suite.args
    patching, _, _ = pack()
    capture = import_pack_module("nodes.attention_patching")
    maps = import_pack_module("p3s_core.inspection.attention_maps")
    base = build_base(args, "float32" if args.cpu else "float16", None)
    p3s = patching.new_p3s_model(base, encoder(args), "full")
    randomised(p3s)
    steps = 4 if args.tiny else 20
    applied = patching.apply_p3s(base, p3s, hint(args))
    recorder = maps.AttentionRecorder(maps.CaptureSettings())
    captured = capture.attach_attention_capture(applied, recorder)
    with suite.guarded("capture syncs"):
        sample(args, captured, 2)
        per_step = {}
        for name, model in (("p3s", applied), ("p3s + capture", captured)):
            per_step[name] = count_syncs(args, lambda m=model: sample(args, m, steps)) / steps
            suite.row("capture syncs", variant=name, syncs_per_step=round(per_step[name], 2))
        suite.check(bool(torch.isfinite(sample(args, captured, 2)).all()), "capture: non-finite output")


def sdxl_base(args):
    """A random-weight SDXL MODEL (SDXL 1.0's size in fp16 on CUDA; the tiny one with ``--tiny``)."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import torch

    from devtools import tiny_models

    with torch.inference_mode():
        if args.tiny:
            made = tiny_models.tiny_sdxl_patcher(seed=0)
        else:
            dtype = torch.float32 if args.cpu else torch.float16
            made = tiny_models.sdxl_patcher(tiny_models.sdxl_full_unet_config(), seed=0, dtype=dtype)
    return comfy.model_patcher.ModelPatcher(
        made.model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device()
    )


def sdxl_inputs(base, side: int, images: int = 2):
    """Conditioning (with SDXL's pooled text) and TrainingData (with its ``y``) for ``base``."""
    import torch

    from devtools.tiny_models import SDXL_SIZE_EMBEDDINGS, random_training_data

    config = base.model.model_config.unet_config
    context, adm = config["context_dim"], config["adm_in_channels"]
    gen = torch.Generator().manual_seed(3)

    def cond():
        pooled = torch.randn(1, adm - SDXL_SIZE_EMBEDDINGS, generator=gen)
        return [[torch.randn(1, 77, context, generator=gen), {"pooled_output": pooled}]]

    positive, negative = cond(), cond()
    token_dim = TINY_ENCODER["token_dim"] if base.model.diffusion_model.model_channels < 320 else 1024
    data = random_training_data(images, side, context, token_dim, adm)
    return positive, negative, data


def sdxl_section(suite: Suite) -> None:
    """Section 10: SDXL sampling and training memory, measured beside scope ``auto``'s estimate."""
    import torch

    from devtools.pack_modules import import_pack_module

    args = suite.args
    cuda = torch.cuda.is_available() and not args.cpu
    patching, training_settings, training_loop = pack()
    placement = import_pack_module("nodes.p3s_placement")
    scope_memory = import_pack_module("p3s_core.training.scope_memory")
    bases = import_pack_module("p3s_core.bases.registry")
    side = args.tiny_latent if args.tiny else args.sdxl_latent
    base = sdxl_base(args)
    positive, negative, data = sdxl_inputs(base, side)
    noise = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(1))

    def sampled(model):
        import comfy.sample

        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        with torch.inference_mode():
            out = comfy.sample.sample(
                model, noise, 2, 5.0, "euler", "normal", positive, negative, torch.zeros_like(noise), seed=1,
                disable_pbar=True,
            )  # fmt: skip
        return out, (torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan"))

    plain, plain_peak = sampled(base)
    init = patching.new_p3s_model(base, encoder(args), "injection")
    untrained, _ = sampled(patching.apply_p3s(base, init, torch.randn(1, 4, side, side)))
    suite.check(torch.equal(untrained, plain), "SDXL: an untrained P3S model changed sampling")
    suite.row("sdxl sampling", scope="plain", peak_mib=round(plain_peak, 1), ratio=1.0)
    for scope in ("injection", "lora"):
        p3s = patching.new_p3s_model(base, encoder(args), scope)
        randomised(p3s)
        out, peak = sampled(patching.apply_p3s(base, p3s, torch.randn(1, 4, side, side)))
        suite.check(bool(torch.isfinite(out).all()), f"SDXL {scope}: sampling not finite")
        ratio = round(peak / plain_peak, 3) if cuda else float("nan")
        suite.row("sdxl sampling", scope=scope, peak_mib=round(peak, 1), ratio=ratio)
        if cuda:
            suite.check(ratio <= 1.15, f"SDXL {scope}: sampling peak {ratio}x plain (target <= 1.15)")
        del p3s
    unet = base.model.diffusion_model
    layers = scope_memory.p3s_layer_parameters(unet, encoder(args), -1)
    needs = scope_memory.scope_needs(
        unet, layers, 32, side * side, 1, True, True, 0, bases.base_for_model(base)
    )  # fmt: skip
    cards = [None, 12] if cuda else [None]
    for card in cards:
        if card is not None:
            total = torch.cuda.get_device_properties(0).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, card * 2**30 / total))
        for scope in ("injection", "lora", "attention"):
            measure = StepPeak(cuda)
            p3s = patching.new_p3s_model(base, encoder(args), scope)
            frozen = placement.training_clone(base)
            placement.load_for_training(frozen)
            settings = training_settings.TrainSettings(
                epochs=1, lr=1e-4, scope=scope, gradient_checkpointing=True, batch_size=1
            )  # fmt: skip
            with suite.guarded(f"sdxl training {scope} card={card or 'full'}"):
                try:
                    with torch.inference_mode():
                        training_loop.train_p3s(
                            p3s, frozen.model.diffusion_model, base.get_model_object("model_sampling").sigmas, data,
                            settings, device=frozen.load_device, compute_dtype=placement.base_compute_dtype(base),
                            on_step=measure,
                        )  # fmt: skip
                except torch.cuda.OutOfMemoryError:
                    measure.peak = float("inf")  # does not fit that card: a result, not a failure
            peak_gb, estimate_gb = measure.peak / 2**30, needs[scope] / 2**30
            suite.row(
                "sdxl training", scope=scope, card=f"{card} GB" if card else "full", checkpointing=True,
                s_per_step=round(measure.seconds, 3), peak_gb=round(peak_gb, 3), estimate_gb=round(estimate_gb, 3),
                measured_over_estimate=round(peak_gb / estimate_gb, 3),
            )  # fmt: skip
            del p3s, frozen
        if card is not None:
            torch.cuda.set_per_process_memory_fraction(1.0)


SECTIONS = {
    "dtypes": dtype_matrix,
    "vram-modes": run_vram_modes,
    "training": training_memory,
    "sampling": sampling_speed,
    "memory": memory_baseline,
    "resume": resume_run,
    "fp32-auto": fp32_auto,
    "capture-syncs": capture_syncs,
    "sdxl": sdxl_section,
}


def print_table(suite: Suite) -> None:
    for section, rows in suite.rows.items():
        print(f"\n== {section}")
        keys = list(rows[0])
        widths = [max(len(k), *(len(str(r.get(k, ""))) for r in rows)) for k in keys]
        print("  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True)))
        for r in rows:
            print("  ".join(str(r.get(k, "")).ljust(w) for k, w in zip(keys, widths, strict=True)))
    print("\nFAILURES:" if suite.failures else "\nall checks passed")
    for failure in suite.failures:
        print(f"  - {failure}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (ComfyUI's --cpu)")
    parser.add_argument("--tiny", action="store_true", help="the tiny SD1.5-shaped model at 64 px")
    parser.add_argument("--latent", type=int, default=64, help="latent side of the full-size runs (512 px = 64)")
    parser.add_argument("--tiny-latent", type=int, default=8, help="latent side of the --tiny runs")
    parser.add_argument("--sdxl-latent", type=int, default=128, help="latent side of the SDXL rows (1024 px = 128)")
    parser.add_argument("--section", choices=[*SECTIONS, "vram"], action="append", help="only these (repeatable)")
    parser.add_argument("--vram", choices=list(VRAM_MODES), help=argparse.SUPPRESS)
    parser.add_argument("--comfyui", help="ComfyUI folder (default: the host of devtools/comfy_host.py)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1 if args.cpu else max(1, os.cpu_count() or 1))
    if not args.cpu and not torch.cuda.is_available():
        parser.error("no CUDA device: run with --cpu (and --tiny) on a machine without one")
    setup_comfy(args)
    suite = Suite(args)
    start = time.perf_counter()
    for name in args.section or list(SECTIONS):
        began = time.perf_counter()
        if name == "vram":
            vram_mode(suite)
        else:
            with suite.guarded(f"section {name}"):
                SECTIONS[name](suite)
        suite.row("sections", part=name, seconds=round(time.perf_counter() - began, 1))
    suite.row(
        "run", seconds=round(time.perf_counter() - start, 1), device="cpu" if args.cpu else torch.cuda.get_device_name()
    )
    if args.json:
        print(json.dumps({"rows": suite.rows, "failures": suite.failures}))
    else:
        print_table(suite)
    return 1 if suite.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
