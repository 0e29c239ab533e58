"""Remove what is not the subject from the reference images.

[stated intent] "fill the mask to remove unrelated subjects". [reconstructed] Two modes:
inpaint a mask away with OpenCV (Telea's fast marching or Navier-Stokes; wire the RNGR
negative mask to erase look-alikes), or keep only the subject mask and fill everything
outside it with a flat colour. Pixels outside the inpainted region are returned unchanged.
For diffusion-quality fills, wire the masks into ComfyUI's own inpainting instead.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
import torch

from .errors import P3SInputError

InpaintMethod = Literal["telea", "navier_stokes", "fill_outside"]
INPAINT_METHODS: tuple[str, ...] = ("telea", "navier_stokes", "fill_outside")
_CV_FLAGS = {"telea": cv2.INPAINT_TELEA, "navier_stokes": cv2.INPAINT_NS}


def match_masks(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Check an ``[B, H, W]`` (or ``[H, W]``) mask batch against ``[B, H, W, C]`` images."""
    if masks.ndim == 2:
        masks = masks.unsqueeze(0)
    if masks.shape[-2:] != images.shape[1:3]:
        raise P3SInputError(
            f"The mask is {masks.shape[-1]}x{masks.shape[-2]} but the images are {images.shape[2]}x"
            f"{images.shape[1]}: use the mask made from these images (P3S RNGR Mask) or resize both alike."
        )
    if masks.shape[0] == 1 and images.shape[0] > 1:
        masks = masks.expand(images.shape[0], -1, -1)
    if masks.shape[0] != images.shape[0]:
        raise P3SInputError(
            f"{images.shape[0]} images but {masks.shape[0]} masks: give one mask per image (or a single mask for all)."
        )
    return masks


def inpaint(
    images: torch.Tensor,
    masks: torch.Tensor,
    method: InpaintMethod = "telea",
    radius: int = 5,
    fill: float = 0.5,
) -> torch.Tensor:
    """Inpaint ``masks`` (>0.5) away, or with ``fill_outside`` fill everything outside them.

    ``images`` is ComfyUI's ``[B, H, W, C]`` in [0, 1]; the result has the same shape and dtype.
    """
    if method not in INPAINT_METHODS:
        raise P3SInputError(f"Unknown inpaint method {method!r}; choose one of {', '.join(INPAINT_METHODS)}.")
    masks = match_masks(images, masks)
    selected = masks > 0.5
    if method == "fill_outside":
        return torch.where(selected.unsqueeze(-1), images, torch.full_like(images, fill))
    out = []
    for image, mask in zip(images, selected, strict=True):
        if not mask.any():
            out.append(image)
            continue
        rgb = image[..., :3].cpu().numpy()
        filled = cv2.inpaint(
            (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8),
            mask.cpu().numpy().astype(np.uint8),
            radius,
            _CV_FLAGS[method],
        )
        patched = torch.from_numpy(filled.astype(np.float32) / 255.0).to(image)
        result = image.clone()
        result[..., :3] = torch.where(mask.unsqueeze(-1).to(image.device), patched, image[..., :3])
        out.append(result)
    return torch.stack(out)
