"""Attention maps drawn over images: the frozen U-Net's, the copy's, and their difference.

Frozen and copy share one colour scale (their joint minimum to maximum), so equal maps look
equal; the difference ``copy - frozen`` is divided by the same range, red where the copy attends
more, blue where less, white where they agree. Maps are upsampled bilinearly to the image size.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import P3SInputError
from ..validation import excerpt
from .heatmap import render_heatmap

ALPHA = 0.55
MIN_LABEL_WIDTH = 160


class AttentionOverlays(NamedTuple):
    """Three ComfyUI IMAGE batches ``[B, H, W, 3]``."""

    frozen: torch.Tensor
    copy: torch.Tensor
    difference: torch.Tensor


def _batched(image: torch.Tensor, name: str, dims: int) -> torch.Tensor:
    if image.dim() == dims - 1:
        image = image.unsqueeze(0)
    if image.dim() != dims:
        raise P3SInputError(f"{name} must have {dims - 1} or {dims} dimensions, got shape {tuple(image.shape)}.")
    return image


def _resize(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(maps.float().unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)


def difference_overlay(images: torch.Tensor, difference: torch.Tensor, alpha: float = ALPHA) -> torch.Tensor:
    """``difference`` ``[B, H, W]`` in [-1, 1] as red (+) / blue (-) over white, blended over ``images``."""
    d = difference.clamp(-1, 1).unsqueeze(-1)
    white = torch.ones_like(d)
    red = torch.cat([white, 1 - d.clamp(min=0), 1 - d.clamp(min=0)], dim=-1)
    blue = torch.cat([1 + d.clamp(max=0), 1 + d.clamp(max=0), white], dim=-1)
    heat = torch.where(d >= 0, red, blue)
    return (alpha * heat + (1 - alpha) * images[..., :3].float().clamp(0, 1)).clamp(0, 1)


def attention_overlays(
    image: torch.Tensor, frozen_map: torch.Tensor, copy_map: torch.Tensor | None
) -> AttentionOverlays:
    """Overlays of ``frozen_map`` and ``copy_map`` (``[h, w]`` or ``[B, h, w]``) on ``image`` (``[H, W, C]`` or batch).

    With ``copy_map`` None (the copy never ran) the copy and difference images are the plain image.
    """
    images = _batched(image, "image", 4)[..., :3].float().cpu()
    size = tuple(images.shape[1:3])
    frozen = _resize(_batched(frozen_map, "frozen_map", 3).cpu(), size)
    if frozen.shape[0] != images.shape[0]:
        raise P3SInputError(f"{images.shape[0]} images but {frozen.shape[0]} attention maps: give one map per image.")
    no_mask = torch.zeros(frozen.shape)
    if copy_map is None:
        low, span = _range(frozen, frozen)
        return AttentionOverlays(render_heatmap(images, (frozen - low) / span, no_mask), images.clone(), images.clone())
    copy = _resize(_batched(copy_map, "copy_map", 3).cpu(), size)
    if copy.shape != frozen.shape:
        raise P3SInputError(f"The copy's maps {tuple(copy.shape)} and the frozen maps {tuple(frozen.shape)} differ.")
    low, span = _range(frozen, copy)
    return AttentionOverlays(
        render_heatmap(images, (frozen - low) / span, no_mask),
        render_heatmap(images, (copy - low) / span, no_mask),
        difference_overlay(images, (copy - frozen) / span),
    )


def _range(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image joint minimum and (max - min) of two ``[B, H, W]`` map batches, shaped to broadcast."""
    low = torch.minimum(a.amin(dim=(1, 2)), b.amin(dim=(1, 2)))
    high = torch.maximum(a.amax(dim=(1, 2)), b.amax(dim=(1, 2)))
    return low[:, None, None], (high - low).clamp_min(1e-12)[:, None, None]


def label_images(images: torch.Tensor, labels: list[str]) -> torch.Tensor:
    """Write one label per image in its top-left corner (white on a dark band); narrow images stay as they are."""
    if images.shape[2] < MIN_LABEL_WIDTH:
        return images
    out = []
    for image, label in zip(images, labels, strict=True):
        canvas = (image[..., :3].cpu().numpy().clip(0, 1) * 255).astype(np.uint8).copy()
        scale = max(0.35, images.shape[2] / 900)
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.rectangle(canvas, (0, 0), (tw + 8, th + base + 8), (0, 0, 0), -1)
        cv2.putText(canvas, label, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
        out.append(torch.from_numpy(canvas.astype(np.float32) / 255.0))
    return torch.stack(out)


def parse_step_items(text: str, num_steps: int) -> list[tuple[str, list[int] | None]]:
    """``"all"`` (or empty) -> every step averaged; ``"1, 5, 10-20, all"`` -> one item per entry (ranges averaged).

    Returns ``(label, steps)`` pairs; steps None = all.
    """
    text = text.strip()
    if text.lower() in ("", "all"):
        return [(f"steps 1-{num_steps}", None)]
    items: list[tuple[str, list[int] | None]] = []
    for part in text.split(","):
        part = part.strip()
        if part.lower() == "all":
            items.append((f"steps 1-{num_steps}", None))
            continue
        try:
            first, _, last = part.partition("-")
            lo, hi = int(first), int(last or first)
        except ValueError as error:
            raise P3SInputError(
                f'Cannot read step {excerpt(part)}: use "all" or 1-based steps and ranges, e.g. "1, 5, 10-20".'
            ) from error
        if not 1 <= lo <= hi <= num_steps:
            raise P3SInputError(f"Step {excerpt(part)} is outside the sampling run's steps 1..{num_steps}.")
        items.append((f"step {lo}" if lo == hi else f"steps {lo}-{hi}", list(range(lo, hi + 1))))
    return items
