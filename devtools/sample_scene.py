"""The embedded sample: a colour scene with two identical subjects, for tests and the demo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

WIDTH, HEIGHT = 320, 192
LEFT_CENTRE, RIGHT_CENTRE, RADIUS = (80, 96), (240, 96), 40
SUBJECT_RGB = (230, 40, 25)


def twin_scene() -> np.ndarray:
    """``HEIGHT x WIDTH x 3`` uint8: two identical red discs on a grey background."""
    image = np.full((HEIGHT, WIDTH, 3), 128, dtype=np.uint8)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    for cx, cy in (LEFT_CENTRE, RIGHT_CENTRE):
        image[(xx - cx) ** 2 + (yy - cy) ** 2 < RADIUS**2] = SUBJECT_RGB
    return image


def disc_mask(centre: tuple[int, int], radius: int = RADIUS) -> np.ndarray:
    """Boolean mask of a disc of the scene."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    return (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 < radius**2


def write_twin_scene(path: Path) -> Path:
    """Save the scene as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(twin_scene()).save(path)
    return path


def twin_points_json(negative: bool = True) -> str:
    """Points JSON: positive on the left twin, negative on the right one."""
    pos = [[LEFT_CENTRE[0] / WIDTH, LEFT_CENTRE[1] / HEIGHT]]
    neg = [[RIGHT_CENTRE[0] / WIDTH, RIGHT_CENTRE[1] / HEIGHT]] if negative else []
    return json.dumps({"version": 1, "images": [{"positive": pos, "negative": neg}]})
