"""Pictures of point selections: points drawn on an image, and images shrunk for display.

The marker style matches the ``P3S Points`` widget: positive points are green discs,
negative points red squares, each numbered in click order (1, 2, ... per kind).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from ..errors import P3SInputError
from ..selection.points import PointSet

POSITIVE_RGB = (0.13, 0.77, 0.37)
NEGATIVE_RGB = (0.94, 0.27, 0.27)
OUTLINE_RGB = (1.0, 1.0, 1.0)


def marker_radius(width: int, height: int) -> int:
    """Marker radius in pixels: about 1.8% of the shorter side, at least 4 px."""
    return max(4, round(0.018 * min(width, height)))


def draw_points(image: torch.Tensor, point_set: PointSet) -> torch.Tensor:
    """Draw ``point_set`` on one ``[H, W, C]`` float image in [0, 1]; returns a new tensor, same shape.

    Markers are drawn on an 8-bit overlay (OpenCV draws text on 8-bit images only) and blended
    in, so pixels away from the markers keep their exact values.
    """
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise P3SInputError(f"draw_points needs one [H, W, C] image with 1, 3 or 4 channels, got {tuple(image.shape)}.")
    height, width, channels = image.shape
    base = image.detach().to("cpu", torch.float32).numpy()
    rgb = np.repeat(base, 3, axis=-1) if channels == 1 else base[..., :3]
    overlay = np.zeros((height, width, 3), np.uint8)
    alpha = np.zeros((height, width), np.uint8)
    radius = marker_radius(width, height)
    positive, negative = point_set.to_pixels(width, height)
    for kind, pixels in (("negative", negative), ("positive", positive)):
        for number, (x, y) in enumerate(pixels, start=1):
            _draw_marker(overlay, alpha, kind, x, y, radius, str(number))
    weight = alpha.astype(np.float32)[..., None] / 255.0
    blended = rgb * (1.0 - weight) + overlay.astype(np.float32) / 255.0 * weight
    result = torch.from_numpy(np.ascontiguousarray(blended))
    if channels == 1:
        result = result.mean(dim=-1, keepdim=True)
    elif channels == 4:
        result = torch.cat([result, torch.from_numpy(base[..., 3:])], dim=-1)
    return result.to(device=image.device, dtype=image.dtype)


def _draw_marker(overlay: np.ndarray, alpha: np.ndarray, kind: str, x: int, y: int, radius: int, label: str) -> None:
    outline = max(1, radius // 4)
    colour = POSITIVE_RGB if kind == "positive" else NEGATIVE_RGB
    for layer, paint in ((overlay, None), (alpha, 255)):
        ring = paint if paint is not None else _to_u8(OUTLINE_RGB)
        fill = paint if paint is not None else _to_u8(colour)
        if kind == "positive":
            cv2.circle(layer, (x, y), radius + outline, ring, -1, cv2.LINE_AA)
            cv2.circle(layer, (x, y), radius, fill, -1, cv2.LINE_AA)
        else:
            r = radius + outline
            cv2.rectangle(layer, (x - r, y - r), (x + r, y + r), ring, -1)
            cv2.rectangle(layer, (x - radius, y - radius), (x + radius, y + radius), fill, -1)
        scale = radius / 14.0
        thickness = max(1, round(scale * 2))
        origin = (x + radius + outline + 2, max(y - radius, 0) + round(22 * scale))
        shadow = paint if paint is not None else (0, 0, 0)
        text = paint if paint is not None else _to_u8(OUTLINE_RGB)
        cv2.putText(layer, label, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, shadow, thickness + 2, cv2.LINE_AA)
        cv2.putText(layer, label, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, text, thickness, cv2.LINE_AA)


def _to_u8(rgb: tuple[float, float, float]) -> tuple[int, int, int]:
    return tuple(round(255 * c) for c in rgb)


def downscale_for_display(images: torch.Tensor, max_side: int = 1024) -> torch.Tensor:
    """Shrink a ``[B, H, W, C]`` batch so that its longer side is at most ``max_side`` (area filter)."""
    if images.ndim != 4:
        raise P3SInputError(f"Expected an image batch [B, H, W, C], got shape {tuple(images.shape)}.")
    height, width = images.shape[1:3]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return images
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    frames = images.detach().to("cpu", torch.float32).numpy()
    small = [cv2.resize(np.ascontiguousarray(frame), size, interpolation=cv2.INTER_AREA) for frame in frames]
    small = [s[..., None] if s.ndim == 2 else s for s in small]
    return torch.from_numpy(np.stack(small)).to(images.dtype)
