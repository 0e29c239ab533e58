"""SDXL as a second base on a tiny SDXL-shaped MODEL (ComfyUI's own SDXL classes): detected from the
MODEL, a site per transformer block (depth > 1), an untrained model leaves sampling bit-identical,
the copy gets the frozen pass's ``y``, files record the base and each base refuses the other's."""

from __future__ import annotations

import pytest
import torch

from devtools.tiny_models import tiny_sd15_patcher, tiny_sdxl_patcher

from ..p3s_support import ENCODER, context_width, import_pack_module, randomise_injection, sample

patching = import_pack_module("nodes.p3s_patching")
registry = import_pack_module("p3s_core.bases.registry")
sd15 = import_pack_module("p3s_core.bases.sd15")
sdxl = import_pack_module("p3s_core.bases.sdxl")
model_file = import_pack_module("p3s_core.model.model_file")
errors = import_pack_module("p3s_core.errors")

DEPTH = 2
POOLED = 32


@pytest.fixture(scope="module")
def xl():
    """A tiny SDXL-shaped ModelPatcher: depth-2 transformer blocks, context 64, pooled 32."""
    return tiny_sdxl_patcher(depth=DEPTH, seed=0)


@pytest.fixture(scope="module")
def xl_plain(xl):
    return sample(xl)


def test_the_base_is_read_from_the_model(xl, base):
    assert registry.base_for_model(xl) is sdxl
    assert registry.base_for_model(base) is sd15
    assert patching.check_base_model(xl) is sdxl


def test_other_models_are_refused_naming_the_supported_bases():
    import comfy.model_patcher
    import comfy.supported_models

    from devtools.tiny_models import sd15_unet_config

    sd2 = dict(sd15_unet_config(), use_linear_in_transformer=True)
    patcher = comfy.model_patcher.ModelPatcher(
        comfy.supported_models.SD20(sd2).get_model({}), torch.device("cpu"), torch.device("cpu")
    )
    with pytest.raises(errors.P3SInputError, match=r"SD1\.5, SDXL base models only; this MODEL is SD20"):
        patching.check_base_model(patcher)


def test_an_sd15_unet_is_not_an_sdxl_one(base):
    with pytest.raises(errors.P3SInputError, match="needs a plain SDXL U-Net"):
        sdxl.check_layout(base.model.diffusion_model)


def test_p3s_init_builds_a_site_for_every_sdxl_transformer_block(xl):
    p3s = patching.new_p3s_model(xl, ENCODER, "injection")
    blocks = list(sdxl.TRANSFORMER_BLOCKS)
    assert [(s.block, s.block_id) for s in p3s.sites] == [b for b in blocks for _ in range(DEPTH)]
    assert [s.block_index for s in p3s.sites] == list(range(DEPTH)) * len(blocks)
    assert p3s.sites[0].key == "input_4_0" and p3s.sites[-1].key == "output_5_1"
    assert list(p3s.injection) == [s.key for s in p3s.sites]
    assert p3s.base == "sdxl" and p3s.config["architecture"] == sdxl.ARCHITECTURE
    assert context_width(xl) == 64 != context_width(tiny_sd15_patcher())


@pytest.mark.parametrize("scope", ["full", "injection"])
def test_untrained_p3s_on_sdxl_is_bit_identical_to_the_plain_model(xl, xl_plain, scope):
    p3s = patching.new_p3s_model(xl, ENCODER, scope)
    with torch.no_grad():  # the copy's input changes; the output must not
        p3s.hint_conv.weight.normal_()
    hint = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    assert torch.equal(sample(patching.apply_p3s(xl, p3s, hint, strength=1.0)), xl_plain)
    randomise_injection(p3s)
    assert (sample(patching.apply_p3s(xl, p3s, hint)) - xl_plain).abs().max() > 1e-4, "the injection acts"


@pytest.mark.parametrize("apply_to_uncond", [False, True])
def test_the_copy_gets_the_frozen_passes_y(xl, apply_to_uncond):
    p3s = patching.new_p3s_model(xl, ENCODER, "full")
    seen: dict[str, list[torch.Tensor]] = {"copy": [], "frozen": []}

    def record(name):
        def hook(_module, args, kwargs):
            seen[name].append(kwargs["y"].clone())

        return hook

    handles = [
        p3s.copy.register_forward_pre_hook(record("copy"), with_kwargs=True),
        xl.model.diffusion_model.register_forward_pre_hook(record("frozen"), with_kwargs=True),
    ]
    hint = torch.zeros(1, 4, 8, 8)
    try:
        sample(patching.apply_p3s(xl, p3s, hint, apply_to_uncond=apply_to_uncond), steps=2)
    finally:
        for handle in handles:
            handle.remove()
    assert len(seen["copy"]) == len(seen["frozen"]) == 2
    for copy_y, frozen_y in zip(seen["copy"], seen["frozen"], strict=True):
        if apply_to_uncond:
            assert torch.equal(copy_y, frozen_y)
        else:  # the cond row of the frozen batch: the positive prompt's pooled output and sizes
            assert copy_y.shape[0] == 1 and frozen_y.shape[0] == 2
            assert any(torch.equal(copy_y[0], row) for row in frozen_y)
            assert not torch.equal(frozen_y[0], frozen_y[1])


def test_a_file_saved_on_sdxl_records_it_and_each_base_refuses_the_others(xl, base, tmp_path):
    on_xl = patching.new_p3s_model(xl, ENCODER, "injection")
    randomise_injection(on_xl)
    xl_path = tmp_path / "xl.safetensors"
    model_file.save_p3s_model(xl_path, on_xl.state_dict(), on_xl.config, base=on_xl.base, dtype="fp32")
    tensors, info = model_file.load_p3s_model(xl_path, expected_base=None)
    assert info.base == "sdxl" and info.config["architecture"] == "p3s-sdxl"
    from safetensors import safe_open

    with safe_open(str(xl_path), "pt") as handle:
        assert handle.metadata()["modelspec.architecture"] == "stable-diffusion-xl-v1-base/p3s"
    loaded = patching.p3s_model_from_file(xl, tensors, info.config)
    assert all(torch.equal(v, on_xl.state_dict()[k]) for k, v in loaded.state_dict().items())
    with pytest.raises(errors.P3SInputError, match=r"trained on an SDXL base \(p3s-sdxl\).*MODEL is SD1\.5"):
        patching.p3s_model_from_file(base, tensors, info.config)

    on_sd15 = patching.new_p3s_model(base, ENCODER, "injection")
    sd15_path = tmp_path / "sd15.safetensors"
    model_file.save_p3s_model(sd15_path, on_sd15.state_dict(), on_sd15.config, base=on_sd15.base)
    tensors, info = model_file.load_p3s_model(sd15_path, expected_base=None)
    assert info.base == "sd15" and info.config["architecture"] == "p3s-sd15"
    with pytest.raises(errors.P3SInputError, match=r"trained on an SD1\.5 base \(p3s-sd15\).*MODEL is SDXL"):
        patching.p3s_model_from_file(xl, tensors, info.config)


@pytest.mark.parametrize("lac_layers", ["last", "all"])
def test_a_training_step_on_sdxl_passes_y_and_compares_the_last_transformer_block(xl, lac_layers):
    step = import_pack_module("p3s_core.training.step")
    settings = import_pack_module("p3s_core.training.settings")
    p3s = patching.new_p3s_model(xl, ENCODER, "injection")
    randomise_injection(p3s)
    gen = torch.Generator().manual_seed(4)
    y_width = POOLED + 6 * 256
    data = settings.TrainingData(
        latents=torch.randn(2, 4, 8, 8, generator=gen),
        tokens=torch.randn(2, 17, 16, generator=gen),
        mask_grids=torch.ones(2, 4, 4),
        contexts=torch.randn(2, 7, 64, generator=gen),
        uncond=torch.randn(1, 7, 64, generator=gen),
        ys=torch.randn(2, y_width, generator=gen),
        uncond_y=torch.randn(1, y_width, generator=gen),
    )
    seen: list[torch.Tensor] = []
    unet = xl.model.diffusion_model
    handle = unet.register_forward_pre_hook(lambda _m, _a, kwargs: seen.append(kwargs["y"]), with_kwargs=True)
    maps: dict[str, torch.Tensor] = {}
    sigmas = xl.get_model_object("model_sampling").sigmas
    drop = torch.tensor([False, True])
    try:
        l_ldm, l_ac = step.step_losses(
            p3s, unet, sigmas, data, torch.tensor([0, 1]), torch.randn(2, 4, 8, 8, generator=gen),
            torch.tensor([100, 700]), drop, maps=maps, lac_layers=lac_layers,
        )  # fmt: skip
    finally:
        handle.remove()
    assert torch.isfinite(l_ldm) and torch.isfinite(l_ac)
    assert len(seen) == 2, "the copy's pass (injection scope: the base U-Net) and the frozen pass"
    for y in seen:  # the dropped row gets the empty prompt's y, the other its own
        assert torch.equal(y[0], data.ys[0]) and torch.equal(y[1], data.uncond_y[0])
    assert step.last_cross_attention(p3s) == ("output", 5, DEPTH - 1)
    assert maps["frozen"].shape[1] == 4 * 4, "output 5 is at half the latent's side"
    if lac_layers == "all":
        assert {"copy:input_4_0", "copy:input_4_1", "copy:middle_0_1", "copy:output_5_0"} <= set(maps)
        assert len(maps) == 2 * len(p3s.sites)


def test_a_region_on_sdxl_weights_every_site_at_its_own_grid(xl, xl_plain):
    p3s = patching.new_p3s_model(xl, ENCODER, "injection")
    randomise_injection(p3s)
    hint = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    whole = sample(patching.apply_p3s(xl, p3s, hint))
    everywhere = torch.ones(1, 64, 64)  # image pixels: 8 per latent pixel, as SDXL's VAE
    assert torch.equal(sample(patching.apply_p3s(xl, p3s, hint, region=everywhere)), whole)
    left = torch.zeros(1, 64, 64)
    left[:, :, :32] = 1.0
    in_left = sample(patching.apply_p3s(xl, p3s, hint, region=left))
    assert (in_left - whole).abs().max() > 1e-4 and (in_left - xl_plain).abs().max() > 1e-4


def test_an_sdxl_subclass_without_sdxls_blocks_is_refused_by_the_layout_check():
    import comfy.model_patcher
    import comfy.supported_models

    from devtools.tiny_models import sdxl_unet_config

    config = {**sdxl_unet_config(), "transformer_depth_middle": -1}  # SSD-1B's: no middle transformer
    patcher = comfy.model_patcher.ModelPatcher(
        comfy.supported_models.SSD1B(config).get_model({}), torch.device("cpu"), torch.device("cpu")
    )
    assert registry.base_for_model(patcher) is sdxl
    with pytest.raises(errors.P3SInputError, match=r"input 4,5,7,8, middle 0, output 0\.\.5"):
        patching.check_base_model(patcher)
