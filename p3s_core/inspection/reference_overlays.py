"""The Fine-tune's attention overlays: where the frozen U-Net and the trained copy attend to a word.

One training-style forward (:func:`..training.step.reference_attention`) on a reference
image, its last cross-attention maps turned into frozen / copy / difference overlays.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..model.p3s_model import P3SModel
from ..training.settings import TrainingData
from ..training.step import reference_attention
from .attention_maps import TokenGroup, probs_to_maps, spatial_size
from .attention_overlay import attention_overlays, label_images


def reference_overlays(
    p3s: P3SModel,
    unet: torch.nn.Module,
    sigmas: torch.Tensor,
    precision: str,
    compute_dtype: torch.dtype,
    data: TrainingData,
    image: torch.Tensor,
    groups: Sequence[TokenGroup] | None,
) -> torch.Tensor:
    """Frozen, copy and difference overlays of ``groups`` on ``image`` (or the image thrice without a word).

    One forward in training's precision path (same device, dtypes and attention).
    """
    if groups is None:
        return image[..., :3].unsqueeze(0).expand(3, -1, -1, -1).clone()
    frozen, copy = reference_attention(p3s, unet, sigmas, data, precision=precision, compute_dtype=compute_dtype)
    size = spatial_size(frozen.shape[1], data.latents.shape)  # the layer's grid: the latent's, or SDXL's half
    frozen_map = probs_to_maps(frozen.unsqueeze(0), size, groups)[0, 0]
    copy_map = probs_to_maps(copy.unsqueeze(0), size, groups)[0, 0]
    result = attention_overlays(image, frozen_map, copy_map)
    word = groups[0].label
    return label_images(
        torch.cat([result.frozen, result.copy, result.difference]),
        [f"frozen: {word}", f"copy: {word}", "copy - frozen"],
    )
