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

from ..batches import match_mask_batch
from ..errors import P3SInputError
from ..validation import in_range

InpaintMethod = Literal["telea", "navier_stokes", "fill_outside"]
INPAINT_METHODS: tuple[str, ...] = ("telea", "navier_stokes", "fill_outside")
_CV_FLAGS = {"telea": cv2.INPAINT_TELEA, "navier_stokes": cv2.INPAINT_NS}


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
    in_range("fill", fill, 0.0, 1.0)
    masks = match_mask_batch(images, masks)
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
