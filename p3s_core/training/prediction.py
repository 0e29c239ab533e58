"""What the U-Net predicts, and the training step's input and target for it (our addition).

The paper trains SD1.5, an eps-prediction model: the step feeds ``x_t = (x_0 + sigma eps) /
sqrt(sigma^2 + 1)`` and regresses the noise [stated]. The other kinds follow ComfyUI's
``model_sampling`` classes, with the model's ``sigma_data`` (1 for the discrete schedule):

* ``v``: v-prediction (Salimans & Ho, 2022; ``V_PREDICTION``): SD2.x 768-v, NoobAI v-pred,
  SDXL v-prediction fine-tunes over the discrete schedule, and continuous ``V_PREDICTION_EDM``
  models (CosXL): the target ``(sigma_data^2 eps - sigma x_0) / (sigma_data sqrt(sigma^2 +
  sigma_data^2))``, which ComfyUI's ``calculate_denoised`` reads back as ``x_0``;
* ``edm``: EDM's F-prediction (Karras et al., 2022; ComfyUI's ``EDM``: Playground 2.5), whose
  output enters the denoised latent with the opposite sign: the target is minus v's.

Every kind takes the input ``(x_0 + sigma eps) / sqrt(sigma^2 + sigma_data^2)``. The target is
taken in the model's own output space, so the loss keeps the form of each model's own training
(for EDM, Karras's weighting ``1 / c_out^2`` makes the output-space loss unit-weighted).
"""

from __future__ import annotations

import math

import torch

from ..errors import P3SInputError

EPS = "eps"
V_PREDICTION = "v"
EDM = "edm"
PREDICTIONS = (EPS, V_PREDICTION, EDM)

# [reconstructed] the noise levels of an EDM model's training (Karras et al., 2022): ln sigma ~
# N(-1.2, 1.2^2), clamped to the model's range; Playground 2.5 states no other.
EDM_LOG_SIGMA_MEAN = -1.2
EDM_LOG_SIGMA_STD = 1.2


def check_prediction(prediction: str) -> str:
    """``prediction`` if the training step knows it, a ``P3SInputError`` otherwise."""
    if prediction not in PREDICTIONS:
        raise P3SInputError(f"Unknown prediction type {prediction!r}: P3S trains {', '.join(PREDICTIONS)}.")
    return prediction


def noisy_input(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor, sigma_data: float = 1.0) -> torch.Tensor:
    """The U-Net's input at noise level ``sigma``: ``(x_0 + sigma eps) / sqrt(sigma^2 + sigma_data^2)``."""
    return (x0 + sigma * noise) / torch.sqrt(sigma**2 + sigma_data**2)


def prediction_target(
    prediction: str, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor, sigma_data: float = 1.0
) -> torch.Tensor:
    """What a ``prediction`` model should output for ``x0`` noised by ``noise`` at ``sigma``."""
    if check_prediction(prediction) == EPS:
        return noise
    v = (sigma_data**2 * noise - sigma * x0) / (sigma_data * torch.sqrt(sigma**2 + sigma_data**2))
    return v if prediction == V_PREDICTION else -v


def edm_training_sigmas(sigma_min: float, sigma_max: float, count: int = 1000) -> torch.Tensor:
    """``count`` noise levels, ascending, whose uniform draw is EDM's log-normal training distribution
    (quantiles of ``ln sigma ~ N(EDM_LOG_SIGMA_MEAN, EDM_LOG_SIGMA_STD^2)``) clamped to the model's
    ``[sigma_min, sigma_max]``, so a continuous model trains through the same indexed draw as the
    discrete schedule [reconstructed]."""
    if not 0 < sigma_min < sigma_max or not math.isfinite(sigma_max):
        raise P3SInputError(f"An EDM model needs 0 < sigma_min < sigma_max; this one has {sigma_min}, {sigma_max}.")
    quantiles = (torch.arange(count, dtype=torch.float64) + 0.5) / count
    normal = torch.distributions.Normal(EDM_LOG_SIGMA_MEAN, EDM_LOG_SIGMA_STD)
    return normal.icdf(quantiles).exp().clamp(sigma_min, sigma_max).float()
