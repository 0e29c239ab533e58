"""Did the run learn? The references' denoising loss after training against the base's (our addition).

:func:`subject_losses` measures ``L_LDM`` over every reference at fixed noises and timesteps
(no dropout, the plain loss), once through the base U-Net alone and once with the P3S model
injected, in training's precision path. The same noises and timesteps for both make the two
figures a paired comparison: their difference is the model's, not the noise draw's.

:class:`LearningCheck` holds base, before and after, and says in one line what a user reads at
the end of P3S Fine-tune ("subject loss 0.142 -> 0.097, 32 % lower than the base"). A fresh
model's output is the base's (its injection layers start at zero), so its "before" is the
base's loss; a continued model's is measured before training. Below
:data:`LEARNED_THRESHOLD` (the loss lower than the base's by less than that share, measured in
the toy world between a no-op run and runs that learned, see docs/toy_world.md) the line adds
that the model barely moved and what to try.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..model.p3s_model import P3SModel
from .losses import ldm_loss
from .precision import (
    ATTENTION_OVERRIDE_KEY,
    attention_override,
    casting_weights,
    training_precision,
    unet_compute_dtype,
)
from .prediction import noisy_input, prediction_target
from .settings import TrainingData
from .step import NUM_TIMESTEPS, step_losses

LEARNED_THRESHOLD = 0.10  # [reconstructed] share below the base's loss under which a run "barely moved"
CHECK_TIMESTEPS = 8
CHECK_SEED = 4321


@dataclass(frozen=True)
class LearningCheck:
    """The references' ``L_LDM``: the base alone, the P3S model before and after training."""

    base: float
    before: float
    after: float
    threshold: float = LEARNED_THRESHOLD

    @property
    def below_base(self) -> float:
        """How much lower than the base's the trained model's loss is, as a share of the base's."""
        return (self.base - self.after) / self.base if self.base > 0 else 0.0

    @property
    def learned(self) -> bool:
        return self.below_base >= self.threshold

    def summary(self) -> str:
        """``subject loss 0.142 -> 0.097, 32 % lower than the base``."""
        side = "lower" if self.below_base >= 0 else "higher"
        share = f"{abs(self.below_base) * 100:.0f} %"
        return f"subject loss {self.before:.4g} -> {self.after:.4g}, {share} {side} than the base"

    def line(self, advice: str = "") -> str:
        """:meth:`summary`, and when the model barely moved, that it did and what to try."""
        if self.learned:
            return self.summary()
        return (
            f"{self.summary()}: the model barely moved (less than {self.threshold * 100:.0f} % below the base). "
            f"Try {advice or 'more epochs, a higher lr or a richer scope'}."
        )

    def as_dict(self) -> dict:
        return {**asdict(self), "below_base": self.below_base, "learned": self.learned}


def advice_for(scope: str, lr: float, epochs: int) -> str:
    """What to try when a run of ``scope`` at ``lr`` for ``epochs`` barely moved."""
    tips = [f"more epochs (ran {epochs})", f"a higher lr (ran {lr:g})"]
    if scope in ("injection", "lora"):
        tips.append("a richer scope (attention or full, if memory allows)")
    return ", ".join(tips[:-1]) + " or " + tips[-1]


def subject_losses(
    p3s: P3SModel | None,
    unet: nn.Module,
    sigmas: torch.Tensor,
    data: TrainingData,
    precision: str = "auto",
    compute_dtype: torch.dtype | None = None,
    seed: int = CHECK_SEED,
    timesteps: int = CHECK_TIMESTEPS,
) -> float:
    """Mean plain ``L_LDM`` over every reference at ``timesteps`` fixed timesteps and noises.

    ``p3s`` None: the base U-Net alone. The noises and timesteps depend on ``seed`` only, so
    two calls (base and model) compare the same draws. ``p3s`` must be on ``unet``'s device.
    """
    device = next(unet.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    data = data.to(device)
    sigmas = sigmas.detach().to(device=device, dtype=torch.float32)
    rows = torch.arange(data.latents.shape[0])
    path = training_precision(precision, device, compute_dtype or unet_compute_dtype(unet))
    losses = []
    weights = casting_weights(p3s) if p3s is not None else contextlib.nullcontext()
    with torch.inference_mode(False), torch.no_grad(), path.context(device), weights:
        for t in torch.linspace(50, NUM_TIMESTEPS - 50, timesteps).long():
            noise = torch.randn(data.latents.shape, generator=gen)
            steps = t.repeat(len(rows))
            if p3s is None:
                losses.append(_base_loss(unet, sigmas, data, noise.to(device), steps.to(device), path))
            else:
                drop = torch.zeros(len(rows), dtype=torch.bool)
                losses.append(float(step_losses(p3s, unet, sigmas, data, rows, noise, steps, drop, precision=path)[0]))
    return sum(losses) / len(losses)


def _base_loss(unet: nn.Module, sigmas, data: TrainingData, noise, timesteps, path) -> float:
    sigma = sigmas[timesteps].view(-1, 1, 1, 1)
    x_in = path.inputs(noisy_input(data.latents, noise, sigma, data.sigma_data))
    options = {ATTENTION_OVERRIDE_KEY: attention_override}
    y = None if data.ys is None else path.inputs(data.ys)
    t = data.unet_timestep(timesteps)
    pred = unet(x_in, t, context=path.inputs(data.contexts), y=y, transformer_options=options)
    return float(
        ldm_loss(pred.float(), prediction_target(data.prediction, data.latents, noise, sigma, data.sigma_data))
    )
