"""What a training step keeps for backward per latent pixel, SD1.5 against SDXL (not a test).

Scope ``auto`` estimates a training step's activations as a number of bytes per latent pixel
(:mod:`p3s_core.training.scope_memory`), set for SD1.5. This measures what each base's step
really saves for backward: one P3S Fine-tune step (scope ``injection``, both passes, L_ac probe)
on the full-size random U-Net in bf16 runs under ``torch.autograd.graph.saved_tensors_hooks``,
which sees every tensor autograd keeps; the bytes of their distinct storages (parameters left
out) are summed, with the inputs that gradient checkpointing holds for each layer it recomputes.
Three latent sizes (16, 24 and 32) give the least-squares slope, bytes per latent pixel, free of
what does not grow with the image; with and without gradient checkpointing. The figure counts what autograd
keeps, not the allocator's temporaries or the attention kernel's workspace, and the CPU's
attention (PyTorch's SDPA) keeps what the GPU's memory-efficient kernels keep (no attention
matrix), so the ratio between bases is what carries over.

    python -m benchmarks.bench_activations --json
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

BASES = ("sd15", "sdxl")


class SavedBytes:
    """Sum of the distinct storages autograd saves while the ``with`` block runs (parameters excluded)."""

    def __init__(self, parameters) -> None:
        self._skip = {p.untyped_storage().data_ptr() for p in parameters}
        self._seen: dict[int, int] = {}

    def _pack(self, tensor):
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if pointer not in self._skip and tensor.device.type != "meta":
            self._seen[pointer] = max(self._seen.get(pointer, 0), storage.nbytes())
        return tensor

    @property
    def total(self) -> int:
        return sum(self._seen.values())

    def hooks(self):
        import torch

        return torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor)

    @contextlib.contextmanager
    def checkpoint_inputs(self):
        """Count what gradient checkpointing keeps instead: each checkpointed layer's tensor inputs
        (``torch.utils.checkpoint`` holds them outside autograd's saved tensors)."""
        import torch.utils.checkpoint

        original = torch.utils.checkpoint.checkpoint

        def counting(function, *args, **kwargs):
            for value in (*args, *kwargs.values()):
                if isinstance(value, torch.Tensor) and torch.is_grad_enabled():
                    self._pack(value)
            return original(function, *args, **kwargs)

        torch.utils.checkpoint.checkpoint = counting
        try:
            yield
        finally:
            torch.utils.checkpoint.checkpoint = original


def saved_per_step(base, latent: int, checkpointing: bool) -> int:
    """Bytes autograd keeps in one injection-scope training step of ``base`` at ``latent`` x ``latent``."""
    import torch

    from devtools.pack_modules import import_pack_module
    from devtools.tiny_models import random_training_data

    patching = import_pack_module("nodes.p3s_patching")
    training_loop = import_pack_module("p3s_core.training.loop")
    training_settings = import_pack_module("p3s_core.training.settings")
    unet = base.model.diffusion_model
    config = base.model.model_config.unet_config
    context_dim, adm = config["context_dim"], config.get("adm_in_channels")
    with torch.inference_mode():
        p3s = patching.new_p3s_model(base, {"token_dim": 1024}, "injection")
    data = random_training_data(1, latent, context_dim, adm=adm)
    settings = training_settings.TrainSettings(
        epochs=1, lr=1e-5, scope="injection", gradient_checkpointing=checkpointing, dropout=0.0
    )
    meter = SavedBytes([*unet.parameters(), *p3s.parameters()])
    with meter.hooks(), meter.checkpoint_inputs():
        training_loop.train_p3s(p3s, unet, base.get_model_object("model_sampling").sigmas, data, settings)
    del p3s
    gc.collect()
    return meter.total


def least_squares_slope(xs: list[float], ys: list[float]) -> float:
    """The slope of the least-squares line through ``(xs, ys)``."""
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum((x - mean_x) ** 2 for x in xs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bases", nargs="+", choices=BASES, default=list(BASES))
    parser.add_argument("--latents", type=int, nargs="+", default=[16, 24, 32], help="latent sides for the slope")
    parser.add_argument("--size", choices=("tiny", "full"), default="full")
    parser.add_argument("--json", action="store_true", help="print only the JSON summary")
    args = parser.parse_args(argv)

    from devtools.comfy_inprocess import import_comfy

    import_comfy()
    import torch

    from benchmarks.bench_weights import base_model

    torch.set_num_threads(2)
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, flush=True))
    sides = sorted(set(args.latents))
    if len(sides) < 2:
        parser.error("--latents needs at least two different sides")
    per_pixel: dict[str, dict[str, float]] = {}
    for name in args.bases:
        with torch.inference_mode():
            base = base_model(name, args.size, dtype=torch.bfloat16)
        per_pixel[name] = {}
        for checkpointing in (False, True):
            saved = [saved_per_step(base, side, checkpointing) for side in sides]
            slope = least_squares_slope([side**2 for side in sides], saved)
            key = "checkpointed" if checkpointing else "plain"
            per_pixel[name][key] = round(slope / 2**20, 4)
            kept = ", ".join(f"{b / 2**30:.3f} GB at {side}x{side}" for side, b in zip(sides, saved, strict=True))
            say(f"{name} {key}: {kept}: {slope / 2**20:.3f} MiB per latent pixel")
        del base
        gc.collect()
    summary: dict[str, object] = {"latents": sides, "mib_per_latent_pixel": per_pixel}
    if {"sd15", "sdxl"} <= set(per_pixel):
        summary["sdxl_over_sd15"] = {
            key: round(per_pixel["sdxl"][key] / per_pixel["sd15"][key], 3) for key in ("plain", "checkpointed")
        }
        summary["checkpointing_saving"] = {
            name: round(per_pixel[name]["plain"] / per_pixel[name]["checkpointed"], 2) for name in per_pixel
        }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
