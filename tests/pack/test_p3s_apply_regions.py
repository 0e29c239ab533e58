"""P3S Apply's ``region`` through the node, as users' ComfyUI runs it: the region from Load Image's
mask with ``region_feather`` left out (an API prompt without the optional input), on an fp16 base
with plain ops, and bad regions refused before anything is encoded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from core.p3s_support import randomise_injection
from core.sampling.test_regions import H, W, left_half, probed, sample_wide
from PIL import Image

from devtools.pack_modules import import_pack_module, pack_core

from .test_base_dtypes import make_base
from .test_finetune_node import StandinClipVision, StandinVae, references

init_node = import_pack_module("nodes.p3s_init_node")
apply_node = import_pack_module("nodes.p3s_apply_node")
P3SInputError = pack_core(apply_node).errors.P3SInputError


class EncodingVae(StandinVae):
    """Counts encodes: the region is checked before the references are encoded."""

    def __init__(self):
        self.encodes = 0

    def encode(self, images):
        self.encodes += 1
        return super().encode(images)


def trained_p3s(base):
    with torch.inference_mode():
        p3s = init_node.P3SInit.execute(base, StandinClipVision()).result[0]
    with torch.inference_mode(False):
        randomise_injection(p3s)
    return p3s


def apply(base, p3s, vae=None, **region):
    images, mask = references()
    with torch.inference_mode():
        return apply_node.P3SApply.execute(
            base, p3s, images, mask, vae or StandinVae(), StandinClipVision(), 1.0, 0.0, 1.0, False, "cycle", **region
        ).result[0]


def sampled(model, steps: int = 2) -> torch.Tensor:
    with torch.inference_mode():
        return sample_wide(model, steps=steps)


@pytest.fixture
def load_image_mask(tmp_path, monkeypatch):
    """Load Image's MASK of a painted PNG (alpha 0 = masked) whose left half is painted."""
    import folder_paths

    import nodes

    rgba = np.full((8 * H, 8 * W, 4), 255, dtype=np.uint8)
    rgba[:, : 8 * W // 2, 3] = 0  # Load Image's mask is 1 - alpha
    Image.fromarray(rgba, "RGBA").save(tmp_path / "left_region.png")
    monkeypatch.setattr(folder_paths, "get_input_directory", lambda: str(tmp_path))
    _image, mask = nodes.LoadImage().load_image("left_region.png")
    assert mask.shape == (1, 8 * H, 8 * W)
    return mask


def test_the_api_path_takes_the_region_from_a_load_image_mask(load_image_mask):
    base = make_base("fp16")
    p3s = trained_p3s(base)
    from_load_image = sampled(apply(base, p3s, region=load_image_mask))  # region_feather left out
    assert torch.isfinite(from_load_image).all()
    assert torch.equal(from_load_image, sampled(apply(base, p3s, region=left_half(), region_feather=0)))
    assert (from_load_image - sampled(apply(base, p3s))).abs().max() > 0, "the region changes the result"
    model, probe = probed(base, lambda m: apply(m, p3s, region=load_image_mask))
    sampled(model, steps=1)
    grid = probe.added[0].view(2, H, W, -1)
    assert grid.dtype == torch.float16
    assert not grid[..., W // 2 :, :].any() and grid[..., : W // 2, :].abs().amax() > 0


def test_all_ones_and_all_zeros_on_an_fp16_base():
    base = make_base("fp16")
    p3s = trained_p3s(base)
    ones = sampled(apply(base, p3s, region=torch.ones(1, H, W), region_feather=8))
    assert torch.equal(ones, sampled(apply(base, p3s)))
    assert torch.equal(sampled(apply(base, p3s, region=torch.zeros(H, W))), sampled(base))


@pytest.mark.parametrize(
    ("region", "feather", "message"),
    [
        (torch.full((1, H, W), float("nan")), 0, "NaN or infinite"),
        (torch.ones(2, 1, H, W, 3), 0, r"\[H, W\] or \[batch, H, W\]"),
        (torch.ones(1, H, W), float("nan"), "region_feather is nan"),
        (torch.ones(1, H, W), 5000, "region_feather is 5000"),
    ],
    ids=["nan mask", "image not mask", "nan feather", "feather too wide"],
)
def test_bad_regions_are_refused_before_the_references_are_encoded(region, feather, message):
    base = make_base("fp16")
    vae = EncodingVae()
    with pytest.raises(P3SInputError, match=message):
        apply(base, object(), vae, region=region, region_feather=feather)
    assert vae.encodes == 0


def test_the_node_lists_region_inputs_as_optional():
    schema = apply_node.P3SApply.define_schema()
    inputs = {i.id: i for i in schema.inputs}
    assert inputs["region"].optional and inputs["region_feather"].optional
    assert inputs["region_feather"].default == 0
