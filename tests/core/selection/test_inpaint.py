"""Inpainting the negatives away, and filling outside the subject."""

import pytest
import torch

from p3s_core.errors import P3SInputError
from p3s_core.selection.inpaint import inpaint


def scene() -> tuple[torch.Tensor, torch.Tensor]:
    """A horizontal grey gradient with a red square; the mask covers the square."""
    image = torch.linspace(0.2, 0.8, 64).view(1, 1, 64, 1).expand(1, 48, 64, 3).clone()
    image[0, 16:32, 24:40] = torch.tensor([1.0, 0.0, 0.0])
    mask = torch.zeros(1, 48, 64)
    mask[0, 14:34, 22:42] = 1.0
    return image, mask


@pytest.mark.parametrize("method", ["telea", "navier_stokes"])
def test_inpainting_removes_the_masked_object_and_keeps_the_rest(method):
    image, mask = scene()
    out = inpaint(image, mask, method=method, radius=3)
    square = out[0, 16:32, 24:40]
    assert (square[..., 0] - square[..., 1]).abs().max() < 0.1, "no red left: the fill is grey"
    background = torch.linspace(0.2, 0.8, 64)[24:40]
    assert (square[..., 1].mean(0) - background).abs().max() < 0.08, "the gradient is continued"
    outside = mask[0] < 0.5
    assert torch.equal(out[0][outside], image[0][outside]), "pixels outside the mask are untouched"


def test_fill_outside_keeps_only_the_subject():
    image, mask = scene()
    out = inpaint(image, mask, method="fill_outside", fill=1.0)
    assert torch.equal(out[0, 16:32, 24:40], image[0, 16:32, 24:40])
    assert out[0, 0:10].min() == 1.0 and out[0, :, 50:].min() == 1.0


def test_one_mask_serves_a_batch_and_empty_masks_change_nothing():
    image, mask = scene()
    batch = torch.cat([image, image])
    out = inpaint(batch, mask, method="telea")
    assert torch.equal(out[0], out[1])
    assert torch.equal(inpaint(image, torch.zeros(1, 48, 64)), image)


def test_mismatched_masks_are_refused_with_advice():
    image, mask = scene()
    with pytest.raises(P3SInputError, match="masks are 32x24"):
        inpaint(image, torch.zeros(1, 24, 32))
    with pytest.raises(P3SInputError, match="one mask per image"):
        inpaint(torch.cat([image] * 3), torch.cat([mask] * 2))
    with pytest.raises(P3SInputError, match="Unknown inpaint method"):
        inpaint(image, mask, method="lama")
