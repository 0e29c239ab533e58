"""Shared pieces of the P3S model/apply tests: the pack as a package, a tiny model, sampling."""

from __future__ import annotations

import torch

from devtools.pack_modules import import_pack_module

__all__ = ["ENCODER", "copy_batches", "import_pack_module", "random_training_data", "randomise_injection", "sample"]

# The subject encoder of the tiny test models (token width 16 like their tiny CLIP vision stand-ins).
ENCODER = {"token_dim": 16, "inner_dim": 16, "heads": 2}

# Tiny convolutions on a busy 2-core machine run ~20x faster on one thread than on two.
torch.set_num_threads(1)


def conditioning(context_dim: int, seed: int = 3, pooled_dim: int | None = None) -> tuple[list, list]:
    """Random positive and negative conditioning; ``pooled_dim`` adds a ``pooled_output`` (SDXL's ADM input)."""
    gen = torch.Generator().manual_seed(seed)
    positive = [[torch.randn(1, 7, context_dim, generator=gen), {}]]
    negative = [[torch.randn(1, 7, context_dim, generator=gen), {}]]
    if pooled_dim is not None:  # drawn after the contexts: SD1.5's conditioning stays what it was
        for _, extra in (*positive, *negative):
            extra["pooled_output"] = torch.randn(1, pooled_dim, generator=gen)
    return positive, negative


def context_width(model) -> int:
    """The context width of a ComfyUI MODEL's first cross-attention layer."""
    unet = model.model.diffusion_model
    for layer in unet.modules():
        if hasattr(layer, "attn2") and hasattr(layer.attn2, "to_k"):
            return int(layer.attn2.to_k.weight.shape[1])
    raise ValueError("no cross-attention layer")


def pooled_width(model) -> int | None:
    """The ``pooled_output`` width of an SDXL-shaped MODEL's ADM input (beside the size embeddings), else None."""
    unet = model.model.diffusion_model
    if getattr(unet, "num_classes", None) != "sequential":
        return None
    return int(unet.label_emb[0][0].in_features) - 6 * 256


def sample(
    model,
    steps: int = 4,
    cfg: float = 4.0,
    size: int = 8,
    batch: int = 1,
    seed: int = 1,
    control=None,
) -> torch.Tensor:
    """Euler sampling of a ``[batch, 4, size, size]`` latent with a fixed seed (and a ControlNet)."""
    import comfy.sample

    positive, negative = conditioning(context_width(model), pooled_dim=pooled_width(model))
    if control is not None:
        positive = [[c, {**extra, "control": control}] for c, extra in positive]
        negative = [[c, {**extra, "control": control}] for c, extra in negative]
    latent = torch.zeros(batch, 4, size, size)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    return comfy.sample.sample(
        model, noise, steps, cfg, "euler", "normal", positive, negative, latent, seed=seed, disable_pbar=True
    )


def copy_batches(p3s_model) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    """Record the batch size of every run of the P3S copy."""
    runs: list[int] = []
    handle = p3s_model.copy.register_forward_pre_hook(lambda _m, args: runs.append(int(args[0].shape[0])))
    return runs, handle


def randomise_injection(p3s_model, seed: int = 7, scale: float = 0.05) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in p3s_model.injection.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * scale)


def random_training_data(images: int = 2, seed: int = 4, size: int = 8, latents: torch.Tensor | None = None):
    """Seeded random ``TrainingData`` in the tiny test models' shapes; ``latents`` replaces the random
    latents (drawn anyway, so the other tensors stay the same)."""
    training_settings = import_pack_module("p3s_core.training.settings")
    gen = torch.Generator().manual_seed(seed)
    noise_latents = torch.randn(images, 4, size, size, generator=gen)
    return training_settings.TrainingData(
        latents=noise_latents if latents is None else latents,
        tokens=torch.randn(images, 17, 16, generator=gen),
        mask_grids=(torch.rand(images, 4, 4, generator=gen) > 0.5).float(),
        contexts=torch.randn(images, 7, 32, generator=gen),
        uncond=torch.randn(1, 7, 32, generator=gen),
    )
