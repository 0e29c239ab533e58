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


def check_masks_cover_something(masks: torch.Tensor, images_label: str = "image") -> None:
    """Refuse a ``[B, H, W]`` batch in which a mask is all zero, naming the first such image (1-based).

    A mask with any pixel above 0 passes, however small: the subject encoder then sees little of
    the subject, which subject framing (``frame_subject``) makes up for.
    """
    empty = torch.nonzero(masks.flatten(1).amax(dim=1) <= 0).flatten()
    if empty.numel():
        which = ", ".join(str(int(i) + 1) for i in empty[:5])
        raise P3SInputError(
            f"The subject mask of {images_label} {which} (of {masks.shape[0]}) is empty (all zero), so there is no "
            "subject to learn or show: connect the mask P3S RNGR Mask made for that image, or check its points."
        )
