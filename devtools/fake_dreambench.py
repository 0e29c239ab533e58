"""A tiny dataset in the layout of DreamBooth's (``<subject>/*.jpg`` and a ``prompts_and_classes.txt``
in that file's format, with prompts of our own) for the DreamBench run's tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SUBJECTS = {"red_disc": "toy", "blue_dog": "dog"}
"""An object and a live subject (the dogs and cats take the live prompt list)."""
OBJECT_PROMPTS = ["a {0} {1} on a table", "a {0} {1} in the rain", "a {0} {1} on a shelf"]
LIVE_PROMPTS = ["a {0} {1} on the grass", "a {0} {1} in a garden", "a {0} {1} on a sofa"]
COLOURS = {"red_disc": (200, 40, 30), "blue_dog": (40, 60, 200)}


def prompts_text(subjects: dict[str, str] = SUBJECTS) -> str:
    """The file's layout: a ``Classes`` table, then the two ``prompt_list = [...]`` blocks."""
    lines = ["Classes", "subject_name,class", *(f"{name},{cls}" for name, cls in subjects.items()), "", ""]
    lines += ["Prompts", "Object Prompts", "prompt_list = ["]
    lines += [f"'{p}'.format(unique_token, class_token)," for p in OBJECT_PROMPTS]
    lines += ["]", "", "Live Subject Prompts", "prompt_list = ["]
    lines += [f"'{p}'.format(unique_token, class_token)," for p in LIVE_PROMPTS]
    lines += ["]", ""]
    return "\n".join(lines)


def write_fake_dreambench(root: Path, images: int = 2, size: tuple[int, int] = (80, 64)) -> Path:
    """``root/dataset`` with two subjects of ``images`` photos each (a coloured disc, shifted per photo)."""
    dataset = root / "dataset"
    width, height = size
    yy, xx = np.mgrid[:height, :width]
    for name in SUBJECTS:
        (dataset / name).mkdir(parents=True, exist_ok=True)
        for index in range(images):
            pixels = np.full((height, width, 3), 235, np.uint8)
            cx, cy = width // 2 + 4 * index, height // 2
            pixels[(xx - cx) ** 2 + (yy - cy) ** 2 < (height // 4) ** 2] = COLOURS[name]
            Image.fromarray(pixels).save(dataset / name / f"{index:02d}.jpg", quality=95)
    (dataset / "prompts_and_classes.txt").write_text(prompts_text())
    return dataset
