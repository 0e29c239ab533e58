"""Subject framing: each reference cropped to a square around its subject, the mask alike."""

from __future__ import annotations

import math

import pytest
import torch

from ..p3s_support import import_pack_module

framing = import_pack_module("p3s_core.selection.framing")
errors = import_pack_module("p3s_core.errors")


def box_mask(height: int, width: int, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    mask = torch.zeros(height, width)
    mask[top:bottom, left:right] = 1.0
    return mask


def coordinate_image(height: int, width: int) -> torch.Tensor:
    """``[C=2, H, W]``: each pixel holds its own row and column, so a crop shows where it came from."""
    rows, cols = torch.meshgrid(torch.arange(height).float(), torch.arange(width).float(), indexing="ij")
    return torch.stack([rows, cols])


def test_the_frame_is_the_subject_box_widened_by_the_margin_and_centred_on_it():
    frame = framing.subject_frame(box_mask(100, 200, 10, 30, 50, 60), margin=0.25)
    assert frame == framing.Frame(top=5, left=40, side=30)
    crop = framing.crop(coordinate_image(100, 200), frame)
    assert crop.shape == (2, 30, 30)
    assert (crop[0, :, 0] == torch.arange(5, 35).float()).all() and (crop[1, 0] == torch.arange(40, 70).float()).all()


def test_a_subject_at_the_edge_is_framed_inside_the_image_without_being_cut():
    frame = framing.subject_frame(box_mask(64, 64, 0, 10, 54, 64), margin=0.5)
    assert frame == framing.Frame(top=0, left=44, side=20)
    crop = framing.crop(box_mask(64, 64, 0, 10, 54, 64).unsqueeze(0), frame)
    assert crop.sum() == 100, "the whole subject is inside the frame"


def test_a_margin_larger_than_the_image_stops_at_its_shorter_side_and_never_below_the_subject():
    assert framing.subject_frame(box_mask(40, 80, 10, 30, 30, 50), margin=4.0).side == 40
    wide = framing.subject_frame(box_mask(20, 100, 5, 15, 10, 90), margin=0.25)
    assert wide.side == 80, "a subject wider than the image is tall keeps its whole width"
    crop = framing.crop(coordinate_image(20, 100), wide)
    assert crop.shape == (2, 80, 80)
    assert crop[0].min() == 0 and crop[0].max() == 19, "rows outside the image repeat its edge rows"


def test_references_are_framed_to_the_resolution_and_the_look_alike_beside_the_subject_is_mostly_cut():
    images = torch.zeros(2, 96, 160, 3)
    images[:, 40:60, 20:40, 0] = 1.0  # the subject (red), left
    images[:, 40:60, 110:130, 2] = 1.0  # the look-alike (blue), right
    masks = box_mask(96, 160, 40, 60, 20, 40).expand(2, -1, -1)
    framed, framed_masks, frames = framing.frame_references(images, masks, resolution=64)
    assert framed.shape == (2, 64, 64, 3) and framed_masks.shape == (2, 64, 64)
    assert framed[..., 2].sum() == 0, "no look-alike pixel in the frame"
    share_before = masks[0].mean().item()
    assert framed_masks[0].mean().item() > 3 * share_before
    assert math.isclose(framed_masks[0].mean().item(), (1 / 1.5) ** 2, abs_tol=0.05)
    assert frames[0] == frames[1]


def test_an_empty_mask_is_refused_naming_the_image():
    masks = torch.stack([box_mask(32, 32, 4, 12, 4, 12), torch.zeros(32, 32)])
    with pytest.raises(errors.P3SInputError, match="reference image 2 is empty"):
        framing.frame_references(torch.zeros(2, 32, 32, 3), masks, resolution=32)


@pytest.mark.parametrize("margin", [-0.1, float("nan"), 5.0])
def test_a_margin_out_of_range_is_refused(margin):
    with pytest.raises(errors.P3SInputError, match="frame_margin"):
        framing.subject_frame(box_mask(32, 32, 4, 12, 4, 12), margin)
