"""Memory and file size per P3S scope, side by side in one process (not a test).

On the full-size random SD1.5 U-Net (``--base sdxl``: SDXL 1.0's, in bf16; ``--size tiny``: small
ones) at a small latent, on the CPU:

- ``sampling_peak_ratio``: peak memory in use while sampling with an (injected) P3S model of
  each scope, weights included, relative to plain sampling of the same base;
- ``training_peak_gb``: peak memory in use during training steps of each scope (weights,
  gradients, AdamW state, activations), and ``today_injection``: the format-1 behaviour, a whole
  copy of the U-Net trained with scope ``injection``;
- ``file_mb``: the saved file (fp16) of each scope;
- ``injection_training_saving_unets``: ``(today_injection - injection)`` training peak in
  U-Nets' weights (the target: at least 1);
- ``training_estimate_gb``: scope ``auto``'s estimate of a training step at the base's own
  resolution (512 px, SDXL 1024 px), batch 1, 16-bit, with gradient checkpointing
  (:mod:`p3s_core.training.scope_memory`).

SDXL's training steps at 1024 px do not fit the CPU machine, so with ``--base sdxl`` the training
figures are that estimate (``training_peak_gb`` is ``training_estimate_gb`` plus the base's weights
in 16-bit) and the summary says
``"estimated": true`` and which figures (``estimated_figures``); its files are saved and its
sampling measured for real.

Every scope is built with ``--injection-rank`` (default: the pack's, -1: rank 64 in every
scope); ``injection_full_layers`` is scope ``injection`` with the paper's full ``C x C``
layers, side by side.

Memory in use is the C heap's allocated bytes (``mallinfo2``: arena + mmapped blocks), polled
every millisecond on a thread while the work runs, so it is each run's own peak even in one
process (freed memory kept by the allocator does not count). ``full`` training (about 4 U-Nets
of float32 state) runs only with ``--train-full``.

    python -m benchmarks.bench_weights --json
    python -m benchmarks.bench_weights --base sdxl --json
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

SIZES = ("tiny", "full")
RESOLUTIONS = {"sd15": 512, "sdxl": 1024}  # each base's own training side


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


_LIBC = ctypes.CDLL("libc.so.6")
_LIBC.mallinfo2.restype = _MallInfo2


def in_use() -> int:
    """Bytes the C heap has handed out and not taken back (small blocks + mmapped blocks)."""
    info = _LIBC.mallinfo2()
    return int(info.uordblks + info.hblkhd)


class PeakMeter:
    """Peak of :func:`in_use` while the ``with`` block runs."""

    def __enter__(self) -> PeakMeter:
        gc.collect()
        self.start = in_use()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, in_use())
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, in_use())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", choices=sorted(RESOLUTIONS), default="sd15")
    parser.add_argument("--size", choices=SIZES, default="full")
    parser.add_argument("--latent", type=int, default=8, help="latent side (8 = 64 px)")
    parser.add_argument("--steps", type=int, default=2, help="sampling steps per run")
    parser.add_argument("--lora-rank", type=int, default=32)
    parser.add_argument("--injection-rank", type=int, default=None, help="rank of the injection layers (0 = full)")
    parser.add_argument("--train-full", action="store_true", help="also train scope full (needs ~4 U-Nets)")
    parser.add_argument("--json", action="store_true", help="print only the JSON summary")
    args = parser.parse_args(argv)

    from devtools.comfy_inprocess import import_comfy

    import_comfy()
    import comfy.sample
    import torch

    from devtools.pack_modules import import_pack_module

    torch.set_num_threads(1)
    patching = import_pack_module("nodes.p3s_patching")
    training_loop = import_pack_module("p3s_core.training.loop")
    training_settings = import_pack_module("p3s_core.training.settings")
    model_file = import_pack_module("p3s_core.model.model_file")
    scope_memory = import_pack_module("p3s_core.training.scope_memory")
    scopes = import_pack_module("p3s_core.model.shared_copy").SCOPES
    rank = import_pack_module("p3s_core.model.injection_layers").DEFAULT_INJECTION_RANK
    rank = rank if args.injection_rank is None else args.injection_rank
    runs = [(scope, scope, rank) for scope in scopes] + [("injection_full_layers", "injection", 0)]
    encoder = {"token_dim": 1024}
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, flush=True))
    estimated = args.base == "sdxl"  # SDXL's training steps at 1024 px do not fit this machine

    with torch.inference_mode():
        base = base_model(args.base, args.size)
    unet = base.model.diffusion_model
    context_dim = base.model.model_config.unet_config["context_dim"]
    extra = _adm_conditioning(base)
    base_bytes = sum(p.numel() * p.element_size() for p in unet.parameters())
    gen = torch.Generator().manual_seed(3)
    positive = [[torch.randn(1, 77, context_dim, generator=gen), dict(extra)]]
    negative = [[torch.randn(1, 77, context_dim, generator=gen), dict(extra)]]
    latent = torch.zeros(1, 4, args.latent, args.latent)
    noise = torch.randn(latent.shape, generator=gen)
    hint = torch.randn(1, 4, args.latent, args.latent, generator=gen)

    def sampling_peak(model) -> int:
        with torch.inference_mode(), PeakMeter() as meter:
            comfy.sample.sample(
                model, noise, args.steps, 7.5, "euler", "normal", positive, negative, latent, seed=1, disable_pbar=True
            )
        return meter.peak - meter.start

    plain_peak = base_bytes + sampling_peak(base)
    say(f"plain sampling: {plain_peak / 2**30:.2f} GB (U-Net weights {base_bytes / 2**30:.2f} GB)")
    file_mb, ratio, train_bytes = {}, {}, {}
    data = training_settings.TrainingData(
        torch.randn(1, 4, args.latent, args.latent, generator=gen),
        torch.randn(1, 257, 1024, generator=gen),
        torch.ones(1, 16, 16),
        torch.randn(1, 77, context_dim, generator=gen),
        torch.randn(1, 77, context_dim, generator=gen),
    )
    sigmas = base.get_model_object("model_sampling").sigmas

    def training_peak(p3s, scope=None) -> int:
        own = sum(p.numel() * p.element_size() for p in p3s.parameters())
        settings = training_settings.TrainSettings(epochs=2, lr=1e-5, scope=scope)
        with PeakMeter() as meter:
            training_loop.train_p3s(p3s, unet, sigmas, data, settings)
        return base_bytes + own + meter.peak - meter.start

    for name, scope, run_rank in runs:
        with torch.inference_mode():
            p3s = patching.new_p3s_model(base, encoder, scope, lora_rank=args.lora_rank, injection_rank=run_rank)
        for param in p3s.injection.parameters():
            torch.nn.init.normal_(param, std=0.01)
        own = sum(p.numel() * p.element_size() for p in p3s.parameters())
        ratio[name] = round((base_bytes + own + sampling_peak(patching.apply_p3s(base, p3s, hint))) / plain_peak, 3)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"{name}.safetensors"
            model_file.save_p3s_model(path, p3s.state_dict(), p3s.config, dtype="fp16")
            file_mb[name] = round(path.stat().st_size / 2**20, 1)
        if not estimated and (scope != "full" or args.train_full):
            train_bytes[name] = training_peak(p3s)
        if not estimated and scope == "full":
            train_bytes["today_injection"] = training_peak(p3s, "injection")
        trained = f"{train_bytes[name] / 2**30:.2f} GB" if name in train_bytes else "not run"
        say(f"{name}: file {file_mb[name]} MB, sampling {ratio[name]}x plain, training {trained}")
        del p3s
        gc.collect()
    estimate = _training_estimates(scope_memory, base, encoder, args.lora_rank, rank, RESOLUTIONS[args.base])
    say(f"training estimate at {RESOLUTIONS[args.base]} px with checkpointing: {estimate}")
    summary = {"base": args.base, "size": args.size, "injection_rank": rank, "file_mb": file_mb}
    summary["sampling_peak_ratio"] = ratio
    if estimated:  # the card holds the base's weights in 16-bit beside what the step needs
        weights_gb = sum(p.numel() for p in unet.parameters()) * 2 / 2**30
        peak = {scope: round(value + weights_gb, 2) for scope, value in estimate.items()}
        summary.update(training_peak_gb=peak, estimated=True, estimated_figures=["training_peak_gb"])
    else:
        # How many U-Nets' weights an injection training step saves against format 1's whole copy.
        saved = (train_bytes["today_injection"] - train_bytes["injection"]) / base_bytes
        say(f"injection training: {saved:.3f} U-Nets' weights below today's")
        summary["training_peak_gb"] = {key: round(value / 2**30, 2) for key, value in train_bytes.items()}
        summary["injection_training_saving_unets"] = round(saved, 3)
    summary["training_estimate_gb"] = estimate
    print(json.dumps(summary))
    return 0


def base_model(base: str, size: str, dtype=None):
    """The random base ``ModelPatcher`` with its weights in ``dtype``; by default SD1.5 in float32 and
    SDXL in bf16 (SDXL 1.0's 2.6 billion parameters in float32 and a full-scope copy beside them
    would not fit 24 GB)."""
    import torch

    from devtools import tiny_models

    if base == "sd15":
        dtype = dtype or torch.float32
        if size == "tiny":
            return tiny_models.tiny_sd15_patcher(model_channels=32, context_dim=32, seed=0, dtype=dtype)
        channels, context = tiny_models.SD15_FULL_CHANNELS, tiny_models.SD15_FULL_CONTEXT
        return tiny_models.tiny_sd15_patcher(model_channels=channels, context_dim=context, seed=0, dtype=dtype)
    if size == "tiny":
        return tiny_models.tiny_sdxl_patcher(seed=0, dtype=dtype or torch.float32)
    return tiny_models.sdxl_patcher(tiny_models.sdxl_full_unet_config(), seed=0, dtype=dtype or torch.bfloat16)


def _adm_conditioning(base) -> dict:
    """What a conditioning carries besides its tokens for ``base``'s ADM input (SDXL's pooled text)."""
    import torch

    adm = base.model.model_config.unet_config.get("adm_in_channels")
    if not adm:
        return {}
    from devtools.tiny_models import SDXL_SIZE_EMBEDDINGS

    return {"pooled_output": torch.randn(1, adm - SDXL_SIZE_EMBEDDINGS, generator=torch.Generator().manual_seed(5))}


def _training_estimates(scope_memory, base, encoder: dict, lora_rank: int, rank: int, side: int) -> dict[str, float]:
    """Scope ``auto``'s estimate (GB) per scope of a batch-1, 16-bit step at ``side`` px with checkpointing
    on ``base`` (what it needs beside the base's weights, which are loaded already)."""
    from devtools.pack_modules import import_pack_module

    architecture = import_pack_module("p3s_core.bases.registry").base_for_model(base)
    unet = base.model.diffusion_model
    layers = scope_memory.p3s_layer_parameters(unet, encoder, rank)
    needs = scope_memory.scope_needs(unet, layers, lora_rank, (side // 8) ** 2, 1, True, True, 0, architecture)
    return {scope: round(value / 2**30, 2) for scope, value in needs.items()}


if __name__ == "__main__":
    raise SystemExit(main())
