"""Pairing image batches with their masks."""

from __future__ import annotations

import torch

from .errors import P3SInputError


def match_mask_batch(
    images: torch.Tensor, masks: torch.Tensor, images_label: str = "images", masks_label: str = "masks"
) -> torch.Tensor:
    """``[B, H, W]`` masks for ``[B, H, W, C]`` images: one mask serves all; other mismatches are errors."""
    if masks.ndim == 2:
        masks = masks.unsqueeze(0)
    if tuple(masks.shape[-2:]) != tuple(images.shape[1:3]):
        raise P3SInputError(
            f"The {masks_label} are {masks.shape[-1]}x{masks.shape[-2]} but the {images_label} are "
            f"{images.shape[2]}x{images.shape[1]}: use the mask made from these images (P3S RNGR Mask) "
            "or resize both alike."
        )
    if masks.shape[0] == 1 and images.shape[0] > 1:
        masks = masks.expand(images.shape[0], -1, -1)
    if masks.shape[0] != images.shape[0]:
        raise P3SInputError(
            f"{images.shape[0]} {images_label} but {masks.shape[0]} {masks_label}: give one mask per image "
            "(in the same order), or a single mask for all."
        )
    return masks
