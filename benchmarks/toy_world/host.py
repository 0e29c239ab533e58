"""The tiny SD1.5-shaped U-Net of the toy world, on ComfyUI's own modules (CPU, one thread)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from p3s_core.training.prediction import noisy_input

MODEL_CHANNELS = 32  # the smallest width ComfyUI's GroupNorm(32) allows with SD1.5's layout
NUM_TIMESTEPS = 1000


def setup_torch() -> None:
    """One thread (tiny convolutions on a busy 2-core machine) and ComfyUI imported on the CPU."""
    torch.set_num_threads(1)
    from devtools.comfy_inprocess import import_comfy

    import_comfy()


@contextlib.contextmanager
def autograd_safe_attention() -> Iterator[None]:
    """ComfyUI's attention switched to PyTorch SDPA inside the block (restored after).

    ComfyUI's CPU default (sub-quadratic, picked from free RAM) may take a chunked path with an
    in-place ``exp`` that autograd rejects; every toy-world stage runs on SDPA.
    """
    setup_torch()
    import comfy.ldm.modules.attention as attention

    saved = attention.optimized_attention
    attention.optimized_attention = attention.attention_pytorch
    try:
        yield
    finally:
        attention.optimized_attention = saved


def new_unet(seed: int, context_dim: int) -> torch.nn.Module:
    """A randomly initialised SD1.5-shaped ``UNetModel`` (ComfyUI's), model_channels 32."""
    setup_torch()
    from devtools.tiny_models import tiny_sd15_patcher

    unet = tiny_sd15_patcher(model_channels=MODEL_CHANNELS, context_dim=context_dim, seed=seed).model.diffusion_model
    return unet.float()


def training_sigmas() -> torch.Tensor:
    """SD1.5's 1000 training sigmas (scaled-linear betas 0.00085..0.012), as ComfyUI computes them."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, NUM_TIMESTEPS, dtype=torch.float64) ** 2
    alphas = torch.cumprod(1.0 - betas, dim=0)
    return ((1 - alphas) / alphas).sqrt().float()


def noised(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """SD's training input at per-sample ``sigma`` ``[B]`` (the pack's :func:`noisy_input`)."""
    return noisy_input(x0, noise, sigma.view(-1, 1, 1, 1))
