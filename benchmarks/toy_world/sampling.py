"""Deterministic Euler sampling (eps-prediction, CFG) with or without P3S injected.

P3S is applied through the pack's own ``make_diffusion_wrapper`` and ``make_injection_patch``
(the code ``P3S Apply`` installs in ComfyUI), called here around the bare U-Net: the wrapper
sees the same ``sigmas`` / ``sample_sigmas`` / ``cond_or_uncond`` options that ComfyUI's
sampler passes, so schedules and cond-only injection behave as in ComfyUI.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from p3s_core.model.injection_pass import make_injection_patch
from p3s_core.model.p3s_model import P3SModel
from p3s_core.sampling.injection import InjectionSettings, make_diffusion_wrapper
from p3s_core.sampling.schedule import WeightSchedule

from .host import training_sigmas

STATE_KEY = "p3s_toy"


def sample_schedule(steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(timesteps, sigmas + trailing 0): evenly spaced from 999 to 0, like ComfyUI's ``normal``."""
    timesteps = torch.linspace(999, 0, steps).round().long()
    sigmas = training_sigmas()[timesteps]
    return timesteps, torch.cat([sigmas, torch.zeros(1)])


def euler_sample(
    unet: torch.nn.Module,
    noise: torch.Tensor,
    context: torch.Tensor,
    uncond: torch.Tensor,
    steps: int = 20,
    cfg: float = 4.0,
    p3s: P3SModel | None = None,
    hint: torch.Tensor | None = None,
    schedule: WeightSchedule | None = None,
) -> torch.Tensor:
    """Samples ``[B, 4, h, w]`` from ``noise`` for ``context`` ``[B, T, C]`` (uncond ``[1, T, C]``)."""
    timesteps, sigmas = sample_schedule(steps)
    b = noise.shape[0]
    ctx = torch.cat([uncond.expand(b, -1, -1), context])
    forward = _model_call(unet, p3s, hint, schedule)
    x = noise * sigmas[0]
    with torch.no_grad():
        for i in range(steps):
            sigma = sigmas[i]
            x_in = torch.cat([x, x]) / torch.sqrt(sigma**2 + 1.0)
            t = timesteps[i].float().repeat(2 * b)
            options = {"cond_or_uncond": [1, 0], "sigmas": sigma.repeat(2 * b), "sample_sigmas": sigmas}
            eps_u, eps_c = forward(x_in, t, ctx, options).chunk(2)
            eps = eps_u + cfg * (eps_c - eps_u)
            x = x + eps * (sigmas[i + 1] - sigma)
    return x


def _model_call(unet, p3s, hint, schedule) -> Callable:
    def plain(x, t, context, options):
        return unet(x, t, context=context, transformer_options=options)

    if p3s is None:
        return plain
    wrapper = make_diffusion_wrapper(p3s, hint, InjectionSettings(), schedule, STATE_KEY)
    patches = {f"{a}_output_patch": [make_injection_patch(a, STATE_KEY)] for a in ("attn1", "attn2")}

    def executor(x, t, context, y, control, options, **kwargs):
        return unet(x, t, context=context, transformer_options=options)

    executor.class_obj = unet  # as ComfyUI's executor: the U-Net whose modules the copy shares

    def injected(x, t, context, options):
        return wrapper(executor, x, t, context, None, None, {**options, "patches": patches})

    return injected


def predict_noise(
    unet: torch.nn.Module,
    x0: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    context: torch.Tensor,
    p3s: P3SModel | None = None,
    hint: torch.Tensor | None = None,
    schedule: WeightSchedule | None = None,
) -> torch.Tensor:
    """One conditional eps prediction at fixed ``timesteps`` (no sampler, no CFG)."""
    sigma = training_sigmas()[timesteps]
    x_in = (x0 + sigma.view(-1, 1, 1, 1) * noise) / torch.sqrt(sigma.view(-1, 1, 1, 1) ** 2 + 1.0)
    options = {"cond_or_uncond": [0], "sigmas": sigma}
    with torch.no_grad():
        return _model_call(unet, p3s, hint, schedule)(x_in, timesteps.float(), context, options)
