"""Base architectures: the injection sites read from a U-Net's structure, SD1.5's layout checked."""

from __future__ import annotations

import pytest

from devtools.comfy_inprocess import import_comfy
from devtools.tiny_models import sd15_unet_config

from ..p3s_support import import_pack_module

sd15 = import_pack_module("p3s_core.bases.sd15")
unet_sites = import_pack_module("p3s_core.bases.unet_sites")
errors = import_pack_module("p3s_core.errors")


def unet(**changes):
    """A ComfyUI ``UNetModel`` of SD1.5's layout (small widths) on the meta device, with ``changes``."""
    import_comfy()
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    return UNetModel(**{**sd15_unet_config(), **changes}, operations=comfy.ops.disable_weight_init, device="meta")


def test_an_sd15_unet_has_16_sites_of_depth_one_named_as_the_attention_maps_layers():
    sites = sd15.check_layout(unet())
    assert len(sites) == 16
    assert [site.key for site in sites] == sd15.ATTENTION_MAP_LAYERS
    assert all(site.depth == 1 and site.block_index == 0 for site in sites)
    assert [site.channels for site in sites[:6]] == [32, 32, 64, 64, 128, 128]
    assert (sites[-1].block, sites[-1].block_id) == sd15.LAST_CROSS_ATTENTION
    assert sites[6].host_key == ("middle", 0, 0)


def test_a_block_of_depth_two_gets_one_site_per_transformer_block_and_is_not_sd15():
    deeper = unet(transformer_depth=[2, 1, 1, 1, 1, 1, 0, 0])
    sites = unet_sites.injection_sites(deeper)
    assert [site.key for site in sites[:3]] == ["input_1_0", "input_1_1", "input_2"]
    assert [site.host_key for site in sites[:2]] == [("input", 1, 0), ("input", 1, 1)]
    with pytest.raises(errors.P3SInputError, match="16 transformer blocks"):
        sd15.check_layout(deeper)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"in_channels": 9}, "4 latent channels"),
        ({"adm_in_channels": 64, "num_classes": "sequential"}, "no class/ADM input"),
    ],
)
def test_other_unets_are_refused_with_what_to_load(changes, message):
    with pytest.raises(errors.P3SInputError, match=message):
        sd15.check_layout(unet(**changes))


def test_something_that_is_not_a_unet_is_refused():
    import torch

    with pytest.raises(errors.P3SInputError, match="Load an SD1\\.5 checkpoint"):
        sd15.check_layout(torch.nn.Linear(2, 2))
