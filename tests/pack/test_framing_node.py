"""P3S Frame Subject: crops a batch to its subjects (one mask for all, as ComfyUI's batch rule allows)."""

from __future__ import annotations

import pytest
import torch

from devtools.pack_modules import import_pack_module, pack_core

framing_node = import_pack_module("nodes.framing_node")
errors = pack_core(framing_node).errors


def test_the_node_frames_every_image_around_its_subject_and_leaves_the_look_alike_out():
    images = torch.zeros(3, 96, 160, 3)
    images[:, 40:60, 20:40, 0] = 1.0  # the subject, red
    images[:, 40:60, 110:130, 2] = 1.0  # the look-alike, blue
    mask = torch.zeros(1, 96, 160)
    mask[:, 40:60, 20:40] = 1.0
    framed, framed_mask = framing_node.P3SFrameSubject.execute(images, mask, 0.25, 128).result
    assert framed.shape == (3, 128, 128, 3) and framed_mask.shape == (3, 128, 128)
    assert framed[..., 0].mean() > 0.3 and framed[..., 2].sum() == 0
    assert torch.allclose(framed[..., 0], framed_mask, atol=0.02), "the mask is cropped alike"


def test_a_mask_of_another_size_is_refused():
    with pytest.raises(errors.P3SInputError, match="resize both alike"):
        framing_node.P3SFrameSubject.execute(torch.zeros(1, 32, 32, 3), torch.ones(1, 16, 16), 0.25, 64)
