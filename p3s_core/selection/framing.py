"""Subject framing (our addition): each reference cropped to a square around its selected subject.

In a cluttered photo the subject may be small and to one side, beside its look-alike; trained on
such references, a model learns the scene more than the subject. Framing crops every reference
to the bounding box of its subject mask, widened by ``margin`` (a share of the box's longer
side on each side), made square around the box's centre and resized to the training resolution;
the mask is cropped alike, so the CLIP tokens, hint and latents are all computed from the crop.

The square is kept inside the image wherever it fits (moved, not shrunk below the subject); a
margin that would leave the image is cut back to the image's shorter side. Only a subject wider
than the image is tall (or taller than it is wide) needs pixels from outside: those are the
image's edge pixels repeated. The box is where the mask is at least ``MASK_THRESHOLD``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..batches import match_mask_batch
from ..errors import P3SInputError
from ..validation import in_range

MASK_THRESHOLD = 0.5
DEFAULT_MARGIN = 0.25
MAX_MARGIN = 4.0


@dataclass(frozen=True)
class Frame:
    """A square crop ``[top, top + side) x [left, left + side)`` in pixels; may reach outside the image."""

    top: int
    left: int
    side: int


def subject_frame(mask: torch.Tensor, margin: float = DEFAULT_MARGIN, image: int | None = None) -> Frame:
    """The square frame around the subject of ``mask`` ``[H, W]``; ``image``: its index, for the error."""
    in_range("frame_margin", margin, 0.0, MAX_MARGIN)
    height, width = mask.shape
    rows = torch.nonzero((mask >= MASK_THRESHOLD).any(dim=1)).flatten()
    cols = torch.nonzero((mask >= MASK_THRESHOLD).any(dim=0)).flatten()
    if rows.numel() == 0:
        which = "" if image is None else f" of reference image {image + 1}"
        raise P3SInputError(
            f"The subject mask{which} is empty (nothing at {MASK_THRESHOLD} or above), so there is no subject to "
            "frame: place a positive point on the subject, or connect that image's mask."
        )
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    left, right = int(cols[0]), int(cols[-1]) + 1
    box = max(bottom - top, right - left)
    side = max(box, min(round(box * (1 + 2 * float(margin))), min(height, width)))
    return Frame(
        _place(top, bottom, side, height),
        _place(left, right, side, width),
        side,
    )


def _place(start: int, end: int, side: int, length: int) -> int:
    """The first pixel of a span of ``side`` centred on ``[start, end)``, moved inside ``[0, length)`` if it fits."""
    first = (start + end - side) // 2
    if side <= length:
        return min(max(first, 0), length - side)
    return first


def crop(pixels: torch.Tensor, frame: Frame) -> torch.Tensor:
    """``pixels`` ``[C, H, W]`` inside ``frame``; what lies outside the image repeats its edge pixels."""
    height, width = pixels.shape[-2:]
    pad = (
        max(0, -frame.left),
        max(0, frame.left + frame.side - width),
        max(0, -frame.top),
        max(0, frame.top + frame.side - height),
    )
    if any(pad):
        pixels = F.pad(pixels.unsqueeze(0), pad, mode="replicate").squeeze(0)
    top, left = frame.top + pad[2], frame.left + pad[0]
    return pixels[..., top : top + frame.side, left : left + frame.side]


def frame_references(
    images: torch.Tensor, masks: torch.Tensor, resolution: int, margin: float = DEFAULT_MARGIN
) -> tuple[torch.Tensor, torch.Tensor, list[Frame]]:
    """``[R, H, W, C]`` images and their masks (one per image, or one for all), each cropped to its
    subject's square frame and resized to ``resolution`` (a multiple of 8); returns both and the frames."""
    masks = match_mask_batch(images, masks, "images", "subject masks")
    size = max(8, round(resolution / 8) * 8)
    frames = [subject_frame(masks[i], margin, i) for i in range(images.shape[0])]
    out_images, out_masks = [], []
    for i, frame in enumerate(frames):
        pixels = crop(images[i].movedim(-1, 0), frame).unsqueeze(0)
        mask = crop(masks[i].unsqueeze(0).float(), frame).unsqueeze(0)
        out_images.append(
            F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        )
        out_masks.append(F.interpolate(mask, size=(size, size), mode="bilinear", align_corners=False))
    framed = torch.cat(out_images).movedim(1, -1).clamp(0, 1)
    return framed, torch.cat(out_masks).squeeze(1).clamp(0, 1), frames
