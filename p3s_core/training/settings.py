"""What a P3S fine-tune is given and what it keeps: settings, training data, loss history, resume state.

[stated] AdamW, lr 1e-5, 60 epochs over the reference images, gamma 0.1, 10% condition
dropout; the options beside them are our additions, measured in the toy world (see
:mod:`.loop` and docs/toy_world.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from ..errors import P3SInputError
from ..model.injection_layers import LOW_RANK_LR_SCALE
from ..model.shared_copy import SCOPES
from ..validation import in_range
from .losses import NORMALISATIONS
from .prediction import EPS, check_prediction

HINT_SOURCES = ("other", "own")
DEFAULT_HINT_LR_SCALE = 100.0
# P3S Fine-tune's background_loss_weight (our addition, chosen in the toy world: docs/toy_world.md,
# "Loss where the subject is"); TrainSettings keeps the paper's plain loss (1) for library callers.
DEFAULT_BACKGROUND_LOSS_WEIGHT = 0.5
LAC_LAYERS = ("last", "all")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
MAX_PRIOR_LOSS_WEIGHT = 10.0


@dataclass(frozen=True)
class TrainSettings:
    """Training settings; defaults follow the paper where it states them."""

    epochs: int = 60
    lr: float = 1e-5
    gamma: float = 0.1
    dropout: float = 0.1
    batch_size: int = 1
    seed: int = 0
    precision: str = "auto"
    scope: str | None = None
    lac_normalisation: str = "mean"
    gradient_checkpointing: bool = False
    hint_source: str = "own"
    injection_lr: float | None = None
    hint_lr_scale: float = DEFAULT_HINT_LR_SCALE
    lac_layers: str = "last"
    low_rank_lr_scale: float = LOW_RANK_LR_SCALE
    background_loss_weight: float = 1.0
    prior_loss_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.scope is not None and self.scope not in SCOPES:
            raise P3SInputError(f"Training scope must be one of {SCOPES}, not {self.scope!r}.")
        if self.precision not in PRECISIONS:
            raise P3SInputError(f"Precision must be one of {PRECISIONS}, not {self.precision!r}.")
        if self.lac_normalisation not in NORMALISATIONS:
            raise P3SInputError(f"L_ac normalisation must be one of {NORMALISATIONS}.")
        if self.hint_source not in HINT_SOURCES:
            raise P3SInputError(f"hint_source must be one of {HINT_SOURCES}, not {self.hint_source!r}.")
        if self.lac_layers not in LAC_LAYERS:
            raise P3SInputError(f"lac_layers must be one of {LAC_LAYERS}, not {self.lac_layers!r}.")
        if self.injection_lr is not None and not (self.injection_lr > 0 and math.isfinite(self.injection_lr)):
            raise P3SInputError("injection_lr must be > 0 (or None for the copy's lr).")
        if in_range("hint_lr_scale", self.hint_lr_scale) <= 0:
            raise P3SInputError(f"hint_lr_scale is {self.hint_lr_scale:g}: it must be > 0 (1 = the copy's lr).")
        if in_range("low_rank_lr_scale", self.low_rank_lr_scale) <= 0:
            raise P3SInputError(
                f"low_rank_lr_scale is {self.low_rank_lr_scale:g}: it must be > 0 (1 = the full layers' lr)."
            )
        in_range("background_loss_weight", self.background_loss_weight, 0.0, 1.0)
        in_range("prior_loss_weight", self.prior_loss_weight, 0.0, MAX_PRIOR_LOSS_WEIGHT)
        if self.epochs < 1 or self.batch_size < 1:
            raise P3SInputError("epochs and batch_size must be at least 1.")
        if in_range("lr", self.lr) <= 0:
            raise P3SInputError(f"lr is {self.lr:g}: the learning rate must be > 0 (the paper uses 1e-5).")
        in_range("gamma", self.gamma, 0.0)
        in_range("dropout", self.dropout, 0.0, 1.0)

    def total_steps(self, images: int) -> int:
        """Optimiser steps for ``images`` references: ``epochs x ceil(images / batch_size)``."""
        return self.epochs * self.steps_per_epoch(images)

    def steps_per_epoch(self, images: int) -> int:
        return math.ceil(images / self.batch_size)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainingData:
    """Everything the loop needs per reference image, already computed by the frozen models.

    ``latents`` ``[R, 4, h, w]`` (model latent space), ``tokens`` ``[R, N, D]`` (CLIP vision,
    penultimate layer), ``mask_grids`` ``[R, g, g]`` (subject mask on the patch grid),
    ``contexts`` ``[R, T, C]`` (text per image), ``uncond`` ``[1, T, C]`` (empty prompt),
    ``latent_masks`` ``[R, h, w]`` (subject mask at latent size, for ``hint_region`` ``subject``).
    ``prior_latents`` ``[P, 4, h, w]`` and ``prior_contexts`` ``[P, T, C]``: class images and
    their class prompt for prior preservation (our addition, DreamBooth's; see :mod:`.loop`).
    ``ys`` ``[R, A]``, ``uncond_y`` ``[1, A]``, ``prior_ys`` ``[P, A]``: the ADM input ``y`` of a base
    that has one (SDXL: pooled text and size embeddings, as ComfyUI's ``encode_adm`` makes it)
    for each caption, the empty prompt and the class prompt; None on SD1.5.
    ``prediction``: what the base's U-Net predicts, ``eps``, ``v`` or ``edm`` (:mod:`.prediction`,
    read from the MODEL's ``model_sampling``); the step's target follows it. ``sigma_data``: the
    model's (1 on the discrete schedule, 0.5 on Playground 2.5). ``unet_timesteps`` ``[N]``: the
    timestep the U-Net is given for each index of the training sigmas (a continuous model's
    ``model_sampling.timestep``); None = the index itself, as on the discrete schedule.
    """

    latents: torch.Tensor
    tokens: torch.Tensor
    mask_grids: torch.Tensor
    contexts: torch.Tensor
    uncond: torch.Tensor
    latent_masks: torch.Tensor | None = None
    prior_latents: torch.Tensor | None = None
    prior_contexts: torch.Tensor | None = None
    ys: torch.Tensor | None = None
    uncond_y: torch.Tensor | None = None
    prior_ys: torch.Tensor | None = None
    prediction: str = EPS
    sigma_data: float = 1.0
    unet_timesteps: torch.Tensor | None = None

    def __post_init__(self) -> None:
        check_prediction(self.prediction)
        if not (math.isfinite(self.sigma_data) and self.sigma_data > 0):
            raise P3SInputError(f"sigma_data must be a positive number, not {self.sigma_data}.")
        r = self.latents.shape[0]
        if any(t.shape[0] != r for t in (self.tokens, self.mask_grids, self.contexts)):
            raise P3SInputError("Latents, CLIP tokens, masks and captions must have one entry per reference image.")
        if self.uncond.shape[1:] != self.contexts.shape[1:]:
            raise P3SInputError("The empty prompt's conditioning must have the captions' token shape.")
        if self.latent_masks is not None and tuple(self.latent_masks.shape) != (r, *self.latents.shape[-2:]):
            raise P3SInputError("The subject masks at latent size must be [images, latent height, latent width].")
        self._check_adm(r)
        self._check_prior()

    def _check_adm(self, r: int) -> None:
        if (self.ys is None) != (self.uncond_y is None):
            raise P3SInputError("The ADM input (y) needs one per caption and one for the empty prompt, or none.")
        if self.ys is not None and (self.ys.shape[0] != r or self.uncond_y.shape != (1, *self.ys.shape[1:])):
            raise P3SInputError("The ADM input (y) must be [images, width], and [1, width] for the empty prompt.")

    def _check_prior(self) -> None:
        if (self.prior_latents is None) != (self.prior_contexts is None):
            raise P3SInputError("Prior preservation needs both the class images' latents and their prompt's context.")
        if self.prior_latents is None:
            return
        if self.prior_latents.shape[0] == 0 or self.prior_latents.shape[0] != self.prior_contexts.shape[0]:
            raise P3SInputError("Prior preservation needs at least one class image, and one context per class image.")
        if self.prior_latents.shape[1:] != self.latents.shape[1:]:
            raise P3SInputError(
                f"The class images' latents {tuple(self.prior_latents.shape[1:])} must have the references' shape "
                f"{tuple(self.latents.shape[1:])}: make them at the training resolution."
            )
        if self.prior_contexts.shape[1:] != self.contexts.shape[1:]:
            raise P3SInputError("The class prompt's conditioning must have the captions' token shape.")
        if (self.prior_ys is None) != (self.ys is None):
            raise P3SInputError("The class images need the ADM input (y) exactly when the captions have it.")

    @property
    def has_prior(self) -> bool:
        return self.prior_latents is not None

    def unet_timestep(self, timesteps: torch.Tensor) -> torch.Tensor:
        """The U-Net's timestep input for training-sigma indices ``timesteps`` (float32)."""
        if self.unet_timesteps is None:
            return timesteps.float()
        return self.unet_timesteps.to(timesteps.device)[timesteps].float()

    def to(self, device: torch.device | str) -> TrainingData:
        """Normal (non-inference) float32 copies on ``device``."""
        with torch.inference_mode(False):
            moved = {
                k: v if not isinstance(v, torch.Tensor) else v.detach().to(device=device, dtype=torch.float32).clone()
                for k, v in asdict(self).items()
            }
        return TrainingData(**moved)


@dataclass
class TrainHistory:
    """Per-step losses (floats): total, L_LDM and L_ac; ``prior``: the prior-preservation L_LDM (if on)."""

    total: list[float] = field(default_factory=list)
    ldm: list[float] = field(default_factory=list)
    ac: list[float] = field(default_factory=list)
    prior: list[float] = field(default_factory=list)


StepCallback = Callable[[int, int, TrainHistory], None]


@dataclass
class ResumeState:
    """Where a training stopped: epochs done, the AdamW state by parameter name, the fp16 loss scale.

    ``optimizer`` maps ``<parameter name>.<exp_avg|exp_avg_sq|step>`` to float32 tensors;
    ``scaler``: the GradScaler's ``{"scale": float, "growth_tracker": int}`` of an fp16 run
    (None: a run without one, or a checkpoint written before it was kept).
    """

    epoch: int
    optimizer: dict[str, torch.Tensor] = field(default_factory=dict)
    scaler: dict | None = None


EpochCallback = Callable[[int, TrainHistory, Callable[[], ResumeState]], None]
"""``on_epoch(epoch, history, state)`` after each epoch; ``state()`` builds the resume state."""


def match_token_lengths(contexts: list[torch.Tensor]) -> list[torch.Tensor]:
    """Repeat text contexts ``[1, T_i, C]`` to one length (their lcm), as ComfyUI does for batches."""
    length = math.lcm(*(c.shape[1] for c in contexts))
    return [c.repeat(1, length // c.shape[1], 1) for c in contexts]
