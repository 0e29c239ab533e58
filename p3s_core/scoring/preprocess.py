"""Images to a backbone's pixels exactly as the reference implementations do (see :mod:`.protocol`).

ComfyUI images are float ``[B, H, W, C]`` in [0, 1]; each is rounded to 8 bits and resized with PIL
(bicubic, the shortest side to the protocol's size, the other ``int(size * long / short)``), centre
cropped and normalised, as ``transformers``' PIL ``CLIPImageProcessor`` and torchvision's
``Resize``/``CenterCrop`` on a PIL image compute it.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..errors import P3SInputError
from .protocol import Preprocess

MASK_FILL = 0.5
"""Grey outside a reference's subject mask (our addition)."""
MASK_MARGIN = 0.1
"""The masked reference is cut to a square around the mask, this fraction of its size wider (our addition)."""


def _rgb_uint8(image: torch.Tensor) -> np.ndarray:
    """``[H, W, C]`` float in [0, 1] to ``[H, W, 3]`` uint8 (grey repeated, alpha dropped)."""
    array = image.detach().float().cpu().numpy()
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.clip(np.rint(array[..., :3] * 255.0), 0, 255).astype(np.uint8)


def _crop_offset(excess: int, mode: str) -> int:
    return excess // 2 if mode == "floor" else round(excess / 2.0)  # Python rounds half to even, as torchvision


def preprocess_image(image: torch.Tensor, spec: Preprocess) -> torch.Tensor:
    """One ``[H, W, C]`` image to ``[3, crop, crop]`` normalised float32 pixels."""
    picture = Image.fromarray(_rgb_uint8(image))
    width, height = picture.size
    short, long = min(width, height), max(width, height)
    new_short, new_long = spec.resize, int(spec.resize * long / short)
    size = (new_short, new_long) if width <= height else (new_long, new_short)
    if size != (width, height):
        picture = picture.resize(size, Image.Resampling.BICUBIC)
    width, height = picture.size
    if width < spec.crop or height < spec.crop:  # cannot happen when resize >= crop; kept as a guard
        raise P3SInputError(f"An image of {width} x {height} px is too small to crop {spec.crop} px.")
    left = _crop_offset(width - spec.crop, spec.crop_offset)
    top = _crop_offset(height - spec.crop, spec.crop_offset)
    picture = picture.crop((left, top, left + spec.crop, top + spec.crop))
    pixels = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(3, 1, 1)
    return (pixels - mean) / std


def preprocess_images(images: torch.Tensor, spec: Preprocess) -> torch.Tensor:
    """``[B, H, W, C]`` images to ``[B, 3, crop, crop]`` pixels for a backbone."""
    return torch.stack([preprocess_image(image, spec) for image in images])


def masked_reference(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The subject alone (our addition): grey outside ``mask``, cut to a square around it.

    ``image`` ``[H, W, C]``, ``mask`` ``[H, W]`` (1 = subject). The square is centred on the mask's
    bounding box, ``MASK_MARGIN`` wider than its longer side, grey where it leaves the image, so
    the protocol's centre crop keeps the whole subject.
    """
    selected = mask > 0.5
    if not bool(selected.any()):
        raise P3SInputError(
            "A reference's subject mask is empty: give a mask that covers the subject (P3S RNGR Mask's "
            "subject_mask), or leave reference_masks unconnected to score the whole references."
        )
    rgb = image[..., :3] if image.shape[-1] >= 3 else image[..., :1].expand(*image.shape[:2], 3)
    filled = torch.where(selected[..., None], rgb.float(), torch.full_like(rgb, MASK_FILL, dtype=torch.float32))
    rows = torch.nonzero(selected.any(dim=1)).flatten()
    cols = torch.nonzero(selected.any(dim=0)).flatten()
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    side = max(1, round(max(bottom - top, right - left) * (1 + MASK_MARGIN)))
    centre_y, centre_x = (top + bottom) / 2, (left + right) / 2
    y0, x0 = round(centre_y - side / 2), round(centre_x - side / 2)
    square = torch.full((side, side, 3), MASK_FILL, dtype=torch.float32)
    height, width = filled.shape[:2]
    sy0, sx0 = max(0, y0), max(0, x0)
    sy1, sx1 = min(height, y0 + side), min(width, x0 + side)
    square[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = filled[sy0:sy1, sx0:sx1]
    return square
