"""Pad-to-square geometry between a reference image and the CLIP encoder's square input.

[reconstructed] The paper does not say how points map to CLIP patches. CLIP's usual centre
crop would cut off the sides of a non-square image, and points there would fall off the
patch grid; padding the image to a square with the normalisation mean (which normalises to
zero) keeps every pixel, so every point has a patch and the mapping is exact both ways.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .points import Point, point_to_pixel


@dataclass(frozen=True)
class Letterbox:
    """An ``height`` x ``width`` image centred on a ``side`` x ``side`` square (``side`` = longer edge)."""

    height: int
    width: int

    @property
    def side(self) -> int:
        return max(self.height, self.width)

    @property
    def pad_top(self) -> int:
        return (self.side - self.height) // 2

    @property
    def pad_left(self) -> int:
        return (self.side - self.width) // 2

    def point_to_cell(self, point: Point, grid: int) -> tuple[int, int]:
        """The (row, col) of the ``grid`` x ``grid`` patch that holds the pixel under a normalised point."""
        px, py = point_to_pixel(point, self.width, self.height)
        col = int((self.pad_left + px + 0.5) * grid / self.side)
        row = int((self.pad_top + py + 0.5) * grid / self.side)
        return min(row, grid - 1), min(col, grid - 1)

    def grid_to_image(self, grid_map: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
        """Upsample ``[..., g, g]`` patch values to the square and crop back to ``[..., H, W]``."""
        lead = grid_map.shape[:-2]
        flat = grid_map.reshape(-1, 1, *grid_map.shape[-2:]).float()
        kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
        square = F.interpolate(flat, size=(self.side, self.side), mode=mode, **kwargs)
        crop = square[..., self.pad_top : self.pad_top + self.height, self.pad_left : self.pad_left + self.width]
        return crop.reshape(*lead, self.height, self.width)


def letterbox_pixels(images: torch.Tensor, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """ComfyUI IMAGE ``[B, H, W, C]`` in [0, 1] -> normalised encoder input ``[B, 3, size, size]``.

    The image is padded to a square with ``mean`` (so padding normalises to 0), resized with
    antialiased bicubic filtering, quantised to 8 bits as CLIP's own preprocessing does, and
    normalised by ``mean`` and ``std``.
    """
    box = Letterbox(images.shape[1], images.shape[2])
    rgb = images[..., :3].movedim(-1, 1).float()
    mean_t = torch.tensor(mean, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    square = mean_t.expand(rgb.shape[0], 3, box.side, box.side).clone()
    square[..., box.pad_top : box.pad_top + box.height, box.pad_left : box.pad_left + box.width] = rgb
    if box.side != size:
        square = F.interpolate(square, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    square = torch.clamp(square * 255.0, 0, 255).round() / 255.0
    return (square - mean_t) / std_t
