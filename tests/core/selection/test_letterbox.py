"""Pixel <-> patch mapping through the pad-to-square letterbox."""

import numpy as np
import pytest
import torch

from p3s_core.selection.letterbox import Letterbox, letterbox_pixels

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


@pytest.mark.parametrize(("height", "width"), [(150, 300), (300, 150), (97, 201), (224, 224), (60, 900)])
def test_a_dot_lands_in_the_patch_that_point_to_cell_names(height, width):
    box = Letterbox(height, width)
    rng = np.random.default_rng(height * 1000 + width)
    checked = 0
    for _ in range(40):
        x, y = rng.uniform(0, 1, size=2)
        px, py = min(int(x * width), width - 1), min(int(y * height), height - 1)
        # Position of the dot in the 224 px encoder input; skip dots within a pixel of a patch border.
        u = (box.pad_left + px + 0.5) * 224 / box.side
        v = (box.pad_top + py + 0.5) * 224 / box.side
        if min(u % 14, 14 - u % 14, v % 14, 14 - v % 14) < 1.5:
            continue
        # The mean colour normalises to 0, like the padding: only the white dot stands out.
        image = torch.tensor(MEAN).expand(1, height, width, 3).clone()
        image[0, py, px] = 1.0
        pixels = letterbox_pixels(image, 224, MEAN, STD)
        patches = pixels[0].sum(0).reshape(16, 14, 16, 14).sum(dim=(1, 3))
        row, col = divmod(int(patches.argmax()), 16)
        assert box.point_to_cell((x, y), 16) == (row, col)
        checked += 1
    assert checked >= 10


def test_every_point_of_the_image_maps_onto_the_grid():
    box = Letterbox(100, 400)
    corners = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)]
    cells = [box.point_to_cell(p, 16) for p in corners]
    assert cells == [(6, 0), (6, 15), (9, 0), (9, 15)]
    assert all(0 <= r < 16 and 0 <= c < 16 for r, c in cells)


def test_padding_normalises_to_zero_and_the_image_is_centred():
    image = torch.ones(1, 50, 100, 3)
    pixels = letterbox_pixels(image, 100, MEAN, STD)
    assert pixels.shape == (1, 3, 100, 100)
    assert pixels[0, :, :20, :].abs().max() < 0.02, "top padding"
    assert pixels[0, :, -20:, :].abs().max() < 0.02, "bottom padding"
    white = (1 - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(pixels[0, :, 50, 50], white, atol=0.02, rtol=0)


def test_grid_to_image_crops_the_padding():
    box = Letterbox(40, 80)
    grid = torch.zeros(4, 4)
    grid[1, :] = 1.0  # row 1 of the square covers square rows 20-39, image rows 0-19
    image = box.grid_to_image(grid, mode="nearest")
    assert image.shape == (40, 80)
    assert image[:20].min() == 1 and image[20:].max() == 0
