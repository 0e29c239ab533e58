"""Points drawn on images (the P3S Points preview) and images shrunk for the widget."""

import pytest
import torch

from p3s_core.errors import P3SInputError
from p3s_core.inspection.preview import NEGATIVE_RGB, POSITIVE_RGB, downscale_for_display, draw_points
from p3s_core.selection.points import PointSet


def test_markers_sit_on_the_points_in_their_colours_and_leave_the_rest_untouched():
    image = torch.rand(120, 240, 3)
    out = draw_points(image, PointSet(((0.25, 0.5),), ((0.75, 0.5),)))
    assert out.shape == image.shape and out.dtype == image.dtype
    assert out[60, 60].tolist() == pytest.approx(POSITIVE_RGB, abs=0.01)
    assert out[60, 180].tolist() == pytest.approx(NEGATIVE_RGB, abs=0.01)
    assert torch.equal(out[5:20, 100:140], image[5:20, 100:140])
    assert torch.equal(image, image.clone())  # input not modified in place
    assert not torch.equal(out, image)


def test_draw_points_keeps_grey_and_alpha_channels():
    grey = torch.zeros(50, 50, 1)
    assert draw_points(grey, PointSet(((0.5, 0.5),))).shape == (50, 50, 1)
    rgba = torch.rand(50, 50, 4)
    out = draw_points(rgba, PointSet(((0.5, 0.5),)))
    assert out.shape == (50, 50, 4)
    assert torch.equal(out[..., 3], rgba[..., 3])


def test_draw_points_rejects_batches():
    with pytest.raises(P3SInputError, match=r"\[H, W, C\]"):
        draw_points(torch.zeros(2, 10, 10, 3), PointSet(((0.5, 0.5),)))


def test_downscale_for_display_bounds_the_longer_side_and_keeps_aspect():
    images = torch.rand(2, 3000, 1500, 3)
    small = downscale_for_display(images, max_side=1000)
    assert small.shape == (2, 1000, 500, 3)
    assert small.mean().item() == pytest.approx(images.mean().item(), abs=0.01)
    little = torch.rand(1, 64, 32, 3)
    assert downscale_for_display(little, max_side=1000) is little
