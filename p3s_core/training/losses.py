"""The P3S training losses: ``L = L_LDM + gamma * L_ac`` [stated, eq. 11-13].

* :func:`ldm_loss`: the latent-diffusion loss, MSE between predicted and true noise [stated].
* :func:`attention_consistency_loss`: ``L_ac``, the MSE between the cross-attention
  probabilities ``softmax(QK^T / sqrt(d))`` of the copy (``M_c``) and of the frozen U-Net
  (``M_o``) at the last cross-attention layer (output block 11 in SD1.5), divided by
  ``avg = (Sum(M_c) + Sum(M_o)) / 2`` [stated].

Normalisation [reconstructed choice]: taken literally (``normalisation="sum"``) the sums run
over every probability of the map; each softmax row sums to 1, so ``avg`` is the number of
rows (``batch x heads x pixels``, about 32k for SD1.5 at 512 px) and ``L_ac`` all but vanishes.
The default ``normalisation="mean"`` uses the mean instead of the sum, ``avg = (mean(M_c) +
mean(M_o)) / 2`` (= 1 / tokens for softmax maps): the squared error relative to the average
probability, which does not depend on image size or batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import P3SInputError

NORMALISATIONS = ("mean", "sum")


def ldm_loss(noise_pred: torch.Tensor, noise: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """``L_LDM``: mean squared error between predicted and true noise, in float32 [stated].

    ``weight`` ``[B, h, w]`` (our addition, see :func:`subject_weight`): each latent pixel's
    share of the loss, the mean taken over the weights so that the loss keeps its scale.
    """
    if noise_pred.shape != noise.shape:
        raise P3SInputError(
            f"Noise prediction {tuple(noise_pred.shape)} does not match the noise {tuple(noise.shape)}."
        )
    if weight is None:
        return F.mse_loss(noise_pred.float(), noise.float())
    squared = (noise_pred.float() - noise.float()) ** 2
    weight = weight.float().unsqueeze(1).expand_as(squared)
    return (squared * weight).sum() / weight.sum().clamp_min(torch.finfo(torch.float32).tiny)


def subject_weight(latent_masks: torch.Tensor, background: float) -> torch.Tensor:
    """Per-pixel weights of ``L_LDM``: 1 on the subject, ``background`` outside it (our addition).

    ``latent_masks`` ``[B, h, w]`` in [0, 1] (the subject masks at latent size, soft at their
    edges); the weight is ``m + background * (1 - m)``, so 1 everywhere is the paper's loss.
    What is left of look-alikes and backgrounds then weighs less than the subject.
    """
    return latent_masks + background * (1.0 - latent_masks)


def attention_consistency_loss(
    copy_probs: torch.Tensor, frozen_probs: torch.Tensor, normalisation: str = "mean"
) -> torch.Tensor:
    """``L_ac = MSE(M_c, M_o) / avg``, ``avg = (S(M_c) + S(M_o)) / 2`` with ``S`` = mean or sum.

    ``copy_probs`` and ``frozen_probs`` are attention probability maps of the same shape (e.g.
    ``[batch * heads, pixels, tokens]``). Gradients flow into both maps.
    """
    if normalisation not in NORMALISATIONS:
        raise P3SInputError(f"L_ac normalisation must be one of {NORMALISATIONS}, not {normalisation!r}.")
    if copy_probs.shape != frozen_probs.shape:
        raise P3SInputError(
            f"The copy's attention map {tuple(copy_probs.shape)} and the frozen model's "
            f"{tuple(frozen_probs.shape)} differ: both must come from the same layer and batch."
        )
    m_c, m_o = copy_probs.float(), frozen_probs.float()
    reduce = torch.mean if normalisation == "mean" else torch.sum
    avg = (reduce(m_c) + reduce(m_o)) / 2
    return F.mse_loss(m_c, m_o) / avg.clamp_min(torch.finfo(torch.float32).tiny)
