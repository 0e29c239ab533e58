"""What the U-Net predicts, and the training step's input and target for it (our addition).

The paper trains SD1.5, an eps-prediction model: the step feeds ``x_t = (x_0 + sigma eps) /
sqrt(sigma^2 + 1)`` and regresses the noise [stated]. v-prediction checkpoints over the same
discrete schedule (SD2.x 768-v, NoobAI v-pred, SDXL v-pred fine-tunes) take the same input and
predict ``v = (eps - sigma x_0) / sqrt(sigma^2 + 1)`` (Salimans & Ho, 2022; ComfyUI's
``model_sampling.V_PREDICTION`` with ``sigma_data`` 1). The target is taken in the model's own
output space, so the loss keeps the form of each model's own training.
"""

from __future__ import annotations

import torch

from ..errors import P3SInputError

EPS = "eps"
V_PREDICTION = "v"
PREDICTIONS = (EPS, V_PREDICTION)


def check_prediction(prediction: str) -> str:
    """``prediction`` if the training step knows it, a ``P3SInputError`` otherwise."""
    if prediction not in PREDICTIONS:
        raise P3SInputError(f"Unknown prediction type {prediction!r}: P3S trains {', '.join(PREDICTIONS)}.")
    return prediction


def noisy_input(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The U-Net's input at noise level ``sigma``: ``(x_0 + sigma eps) / sqrt(sigma^2 + 1)``."""
    return (x0 + sigma * noise) / torch.sqrt(sigma**2 + 1.0)


def prediction_target(prediction: str, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """What a ``prediction`` model should output for ``x0`` noised by ``noise`` at ``sigma``."""
    if check_prediction(prediction) == EPS:
        return noise
    return (noise - sigma * x0) / torch.sqrt(sigma**2 + 1.0)
