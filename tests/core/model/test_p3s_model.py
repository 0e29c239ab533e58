"""The P3S model: SD1.5 check, stable keys, save/rebuild round trip, subject encoder, node path."""

from __future__ import annotations

import json

import pytest
import torch

from devtools.tiny_models import init_parameters, sd15_unet_config

from ..p3s_support import ENCODER, import_pack_module, randomise_injection, sample

patching = import_pack_module("nodes.p3s_patching")
p3s_model = import_pack_module("p3s_core.model.p3s_model")
subject_encoder = import_pack_module("p3s_core.model.subject_encoder")
errors = import_pack_module("p3s_core.errors")


def test_p3s_model_has_32_zero_injection_layers_keyed_by_block(base):
    model = patching.new_p3s_model(base, ENCODER, injection_rank=0)
    keys = model.state_dict().keys()
    injection_weights = sorted(k for k in keys if k.startswith("injection.") and k.endswith(".weight"))
    assert len(injection_weights) == 32
    for key in (
        "injection.input_1.attn1.weight",
        "injection.middle_0.attn2.bias",
        "injection.output_11.attn2.weight",
    ):
        assert key in keys
    assert model.injection_is_zero()
    assert not model.hint_conv.weight.any()
    copy_keys = {k[len("copy.") :] for k in keys if k.startswith("copy.")}
    assert copy_keys == set(base.model.diffusion_model.state_dict().keys())


def test_copy_is_independent_and_trainable(base):
    model = patching.new_p3s_model(base, ENCODER)
    copy_weight = model.copy.input_blocks[1][1].proj_in.weight
    base_weight = base.model.diffusion_model.input_blocks[1][1].proj_in.weight
    assert torch.equal(copy_weight, base_weight)
    assert copy_weight.data_ptr() != base_weight.data_ptr()
    assert all(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        copy_weight.add_(1.0)
    assert not torch.equal(copy_weight, base_weight)


def test_model_made_in_inference_mode_can_be_trained(base):
    with torch.inference_mode():  # ComfyUI runs nodes in inference mode
        model = patching.new_p3s_model(base, ENCODER)
    assert not any(p.is_inference() for p in model.parameters())
    randomise_injection(model)
    x = torch.randn(1, 4, 8, 8)
    context = torch.randn(1, 7, 32)
    captured = import_pack_module("p3s_core.model.injection_pass").run_copy(model, x, torch.tensor([500.0]), context, x)
    sum(state.square().mean() for state in captured.values()).backward()
    assert model.copy.input_blocks[1][1].proj_in.weight.grad is not None
    assert model.hint_conv.weight.grad is not None


def test_copy_takes_base_weights_without_merged_lora(base):
    lora = base.clone()
    key = "diffusion_model.input_blocks.1.1.proj_in.weight"
    weight = base.model.diffusion_model.input_blocks[1][1].proj_in.weight
    original = weight.detach().clone()
    lora.add_patches({key: (torch.ones_like(weight),)}, 1.0)
    lora.patch_model()  # ComfyUI merges the patch into the shared module in place
    try:
        assert not torch.equal(base.model.diffusion_model.input_blocks[1][1].proj_in.weight, original)
        model = patching.new_p3s_model(lora, ENCODER)
    finally:
        lora.unpatch_model()
    assert torch.equal(model.copy.input_blocks[1][1].proj_in.weight, original)


def test_saved_tensors_rebuild_the_same_model(base):
    model = patching.new_p3s_model(base, ENCODER)
    randomise_injection(model, seed=3)
    with torch.no_grad():
        model.copy.out[2].weight.add_(0.5)
        model.encoder.to_q.weight.mul_(2.0)
    tensors = {k: v.clone() for k, v in model.state_dict().items()}
    config = json.loads(json.dumps(model.config))  # the config must survive a JSON round trip
    with torch.inference_mode():  # as in a loader node
        rebuilt = patching.p3s_model_from_file(base, tensors, config)
    assert not any(p.is_inference() for p in rebuilt.parameters())
    rebuilt_sd = rebuilt.state_dict()
    assert rebuilt_sd.keys() == tensors.keys()
    assert all(torch.equal(rebuilt_sd[k], tensors[k]) for k in tensors)
    assert rebuilt.encoder.config == model.encoder.config


def test_rebuild_rejects_foreign_tensors(base):
    model = patching.new_p3s_model(base, ENCODER)
    tensors = dict(model.state_dict())
    tensors.pop("injection.output_11.attn2.weight")
    with pytest.raises(errors.P3SInputError, match="missing"):
        p3s_model.p3s_model_from_tensors(base.model.diffusion_model, tensors, model.config)
    tensors["injection.input_1.attn1.weight"] = torch.zeros(3, 3)
    with pytest.raises(errors.P3SInputError, match="does not fit the base model"):
        p3s_model.p3s_model_from_tensors(base.model.diffusion_model, tensors, model.config)
    with pytest.raises(errors.P3SInputError, match=r"not a P3S SD1\.5 model"):
        p3s_model.p3s_model_from_tensors(base.model.diffusion_model, tensors, {"architecture": "sdxl-lora"})


def test_non_sd15_models_are_refused_with_a_clear_error():
    import comfy.model_patcher
    import comfy.supported_models

    config = sd15_unet_config()
    config["transformer_depth"] = [0, 0, 2, 2, 2, 2, 0, 0]  # SDXL-like depths
    config["transformer_depth_output"] = [0, 0, 0, 2, 2, 2, 2, 2, 2, 0, 0, 0]
    config["transformer_depth_middle"] = 2
    model = comfy.supported_models.SD15(config).get_model({})
    init_parameters(model.diffusion_model, 0)
    patcher = comfy.model_patcher.ModelPatcher(model, torch.device("cpu"), torch.device("cpu"))
    with pytest.raises(errors.P3SInputError, match=r"needs an SD1\.5 U-Net"):
        patching.new_p3s_model(patcher, ENCODER)

    sd2 = dict(sd15_unet_config(), use_linear_in_transformer=True)
    sd2_model = comfy.supported_models.SD20(sd2).get_model({})
    sd2_patcher = comfy.model_patcher.ModelPatcher(sd2_model, torch.device("cpu"), torch.device("cpu"))
    with pytest.raises(errors.P3SInputError, match="SD20"):
        patching.new_p3s_model(sd2_patcher, ENCODER)


def test_mismatched_reference_and_mask_batches_are_refused():
    images = torch.rand(3, 16, 24, 3)
    with pytest.raises(errors.P3SInputError, match="3 reference images but 2 subject masks"):
        patching.check_reference_batches(images, torch.ones(2, 16, 24))
    with pytest.raises(errors.P3SInputError, match="use the mask made from these images"):
        patching.check_reference_batches(images, torch.ones(3, 24, 16))
    assert patching.check_reference_batches(images, torch.ones(1, 16, 24)).shape == (3, 16, 24)


def test_subject_encoder_starts_at_the_latent_and_reads_the_mask():
    torch.manual_seed(0)
    encoder = subject_encoder.SubjectEncoder.from_config(ENCODER)
    tokens = torch.randn(2, 1 + 16, 16)
    latent = torch.randn(2, 4, 6, 6)
    inside = torch.zeros(2, 4, 4)
    inside[:, 1:3, 1:3] = 1.0
    assert torch.equal(encoder(tokens, inside, latent), latent), "zero projection: hint = latent"
    assert not torch.allclose(encoder.attend(tokens, inside), encoder.attend(tokens, 1.0 - inside))
    with torch.no_grad():
        encoder.to_latent.weight.normal_()
    hint = encoder(tokens, inside, latent)
    assert hint.shape == latent.shape and not torch.equal(hint, latent)
    with pytest.raises(errors.P3SInputError, match="width 16"):
        encoder(torch.randn(2, 17, 8), inside, latent)


def test_mask_to_patch_grid_follows_the_letterbox():
    mask = torch.zeros(1, 4, 8)  # wide image: padded top and bottom by 2 rows each
    mask[:, :, :4] = 1.0  # left half
    grid = subject_encoder.mask_to_patch_grid(mask, 2, pad_to_square=True)
    assert grid.tolist() == [[[0.5, 0.0], [0.5, 0.0]]]
    stretched = subject_encoder.mask_to_patch_grid(mask, 2, pad_to_square=False)
    assert stretched.tolist() == [[[1.0, 0.0], [1.0, 0.0]]]


def tiny_clip_vision(tmp_path):
    import comfy.clip_vision

    config = {
        "hidden_size": 16,
        "image_size": 32,
        "intermediate_size": 32,
        "num_attention_heads": 2,
        "num_channels": 3,
        "num_hidden_layers": 3,
        "patch_size": 8,
        "projection_dim": 16,
        "hidden_act": "quick_gelu",
        "model_type": "clip_vision_model",
    }
    path = tmp_path / "clip_vision.json"
    path.write_text(json.dumps(config))
    clip_vision = comfy.clip_vision.ClipVisionModel(str(path))
    init_parameters(clip_vision.model, 11)
    return clip_vision


def tiny_vae():
    import comfy.sd

    ddconfig = {
        "double_z": True,
        "z_channels": 4,
        "resolution": 32,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 32,
        "ch_mult": [1, 1, 1, 1],
        "num_res_blocks": 1,
        "attn_resolutions": [],
        "dropout": 0.0,
    }
    vae = comfy.sd.VAE(sd={}, config={"params": {"ddconfig": ddconfig, "embed_dim": 4}})
    init_parameters(vae.first_stage_model, 12)
    return vae


def test_nodes_init_and_apply_end_to_end(base, tmp_path):
    init_node = import_pack_module("nodes.p3s_init_node")
    apply_node = import_pack_module("nodes.p3s_apply_node")
    clip_vision = tiny_clip_vision(tmp_path)
    vae = tiny_vae()
    p3s = init_node.P3SInit.execute(base, clip_vision).result[0]
    assert p3s.encoder.config["token_dim"] == 16
    images = torch.rand(2, 64, 48, 3, generator=torch.Generator().manual_seed(4))
    masks = torch.zeros(2, 64, 48)
    masks[:, 16:48, 8:40] = 1.0
    args = dict(strength=1.0, start_percent=0.0, end_percent=1.0, apply_to_uncond=False, reference_mode="cycle")

    patched = apply_node.P3SApply.execute(base, p3s, images, masks, vae, clip_vision, **args).result[0]
    assert patched is not base
    plain = sample(base)
    assert torch.equal(sample(patched), plain)

    randomise_injection(p3s)
    with torch.no_grad():
        p3s.hint_conv.weight.normal_(std=0.1)
    patched = apply_node.P3SApply.execute(base, p3s, images, masks, vae, clip_vision, **args).result[0]
    assert (sample(patched) - plain).abs().max() > 1e-3

    with pytest.raises(errors.P3SInputError, match="2 reference images but 3 subject masks"):
        apply_node.P3SApply.execute(base, p3s, images, torch.ones(3, 64, 48), vae, clip_vision, **args)


def test_node_schemas_declare_the_p3s_sockets():
    init_node = import_pack_module("nodes.p3s_init_node").P3SInit
    apply_node = import_pack_module("nodes.p3s_apply_node").P3SApply
    assert init_node.RETURN_TYPES == ["P3S_MODEL"]
    inputs = apply_node.INPUT_TYPES()
    assert inputs["required"]["p3s_model"][0] == "P3S_MODEL"
    assert inputs["optional"]["schedule"][0] == "P3S_SCHEDULE"
    assert apply_node.RETURN_TYPES == ["MODEL"]
