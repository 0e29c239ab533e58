"""Where ComfyUI's model management leaves a P3S model, emulated on the CPU.

The ``meta`` device stands in for CUDA: the P3S model's own ``ModelPatcher`` is loaded with
``load_device=meta`` through ComfyUI's real ``patch_model`` (full load, a partial load with half
its size, and lowvram with 0.1 byte as ComfyUI gives under ``--novram``), then the copy's pass
and the injection deltas run on meta inputs. A tensor on the CPU meeting a meta input raises,
as a CPU weight meeting a CUDA input does.
"""

from __future__ import annotations

import pytest
import torch

from devtools.pack_modules import import_pack_module, pack_core
from devtools.tiny_models import tiny_sd15_patcher, tiny_sdxl_patcher

from .test_base_dtypes import fine_tune, make_base

patching = import_pack_module("nodes.p3s_patching")
placement = import_pack_module("nodes.p3s_placement")
core = pack_core(patching)
ENCODER = {"token_dim": 16, "inner_dim": 16, "heads": 2}
META = torch.device("meta")


@pytest.fixture(scope="module")
def base():
    return tiny_sd15_patcher(seed=0)


@pytest.fixture(scope="module")
def sdxl_base():
    return tiny_sdxl_patcher(seed=0)


@pytest.mark.parametrize("architecture", ["sd15", "sdxl"])
@pytest.mark.parametrize("mode", ["full", "partial", "lowvram"])
def test_every_p3s_parameter_is_loaded_or_cast_per_op_after_comfyui_loads_it(base, sdxl_base, mode, architecture):
    model = sdxl_base if architecture == "sdxl" else base
    p3s = patching.new_p3s_model(model, ENCODER, "full")
    patcher = placement.P3SModelPatcher(p3s, META, torch.device("cpu"))
    size = patcher.model_size()
    memory = {"full": 0, "partial": size // 2, "lowvram": 0.1}[mode]
    patcher.patch_model(device_to=META, lowvram_model_memory=memory)
    on_device, cast = 0, 0
    for name, module in p3s.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if param.device == META:
                on_device += 1
            else:
                assert getattr(module, "comfy_cast_weights", False), f"{name}.{param_name} left behind on the CPU"
                cast += 1
    if mode == "full":
        assert cast == 0
    else:
        assert cast > 0, "the emulated card is too small for all of it"
    config = model.model.model_config.unet_config
    x = torch.randn(2, 4, 8, 8, device=META)
    hint = torch.randn(2, 4, 8, 8)  # the hint stays where the encoder made it (intermediate device)
    context = torch.randn(2, 7, config["context_dim"], device=META)
    y = torch.randn(2, config["adm_in_channels"], device=META) if config.get("adm_in_channels") else None
    options = {core.training.precision.ATTENTION_OVERRIDE_KEY: core.training.precision.attention_override}
    captured = core.model.injection_pass.run_copy(p3s, x, torch.ones(2, device=META), context, hint, options, y=y)
    deltas = core.model.injection_pass.injection_deltas(p3s, captured, 1.0)
    assert len(deltas) == 2 * len(p3s.sites) and all(d.device == META for d in deltas.values())
    assert len(deltas) == (32 if architecture == "sd15" else 2 * 11 * 2)  # SDXL tiny: 11 blocks of depth 2


def test_p3s_patcher_tells_comfyui_its_real_size_and_dtype(base):
    p3s = patching.new_p3s_model(base, ENCODER, "attention")
    patcher = patching.p3s_patcher(p3s, base)
    own = sum(t.nelement() * t.element_size() for t in p3s.state_dict().values())
    assert patcher.model_size() == own < base.model_size(), "shared base modules are not counted"
    assert patcher.model_dtype() == torch.float32
    with torch.inference_mode(False):
        p3s.to(torch.float16)
    assert patcher.model_size() == own // 2 and patcher.model_dtype() == torch.float16, "never a stale size"
    clone = patcher.clone()
    assert isinstance(clone, placement.P3SModelPatcher) and clone.model_size() == own // 2


def test_fine_tune_leaves_no_stale_loaded_p3s_model_in_comfyui(tmp_path, monkeypatch):
    """Fine-tune moved the P3S model behind ComfyUI's back while ComfyUI still listed it as loaded."""
    import comfy.model_management
    import folder_paths

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "p3s", ([str(tmp_path)], {".safetensors"}))
    model = make_base("bf16")
    p3s, _, _ = fine_tune(model, "")
    listed = [m.model for m in comfy.model_management.current_loaded_models if m.model is not None]
    assert all(patcher.model is not p3s for patcher in listed)
    assert {p.dtype for p in p3s.parameters()} == {torch.bfloat16}, "placed in the base's compute dtype"


def test_loader_on_an_fp8_base_keeps_the_files_values(base, tmp_path):
    """fp8 (e4m3) storage rounds by up to ~6%: the file's fp16 weights must not pass through it."""
    fp8 = make_base("fp8_manual_cast")
    trained = patching.new_p3s_model(fp8, ENCODER, "full")
    with torch.no_grad():
        for param in trained.parameters():
            param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(1)).to(param.dtype) * 1e-3)
    path = tmp_path / "subject.safetensors"
    core.model.model_file.save_p3s_model(path, trained.state_dict(), trained.config, {})
    tensors, info = core.model.model_file.load_p3s_model(path)
    loaded = patching.p3s_model_from_file(fp8, tensors, info.config)
    key = "copy.input_blocks.1.1.transformer_blocks.0.attn2.to_q.weight"
    assert loaded.state_dict()[key].dtype == torch.bfloat16
    torch.testing.assert_close(loaded.state_dict()[key].float(), tensors[key].float(), rtol=1e-2, atol=1e-4)
    rounded = tensors[key].to(torch.float8_e4m3fn).float()
    assert (rounded - tensors[key].float()).abs().max() > (loaded.state_dict()[key].float() - tensors[key]).abs().max()


class _NoBackward(torch.autograd.Function):
    """A matmul without backward, like ComfyUI's fp8 ``_scaled_mm`` and cublas paths."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        return torch.nn.functional.linear(x, weight.to(x.dtype), bias.to(x.dtype) if bias is not None else None)

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("this fast op has no backward")


def test_fast_ops_fall_back_to_cast_ops_while_training():
    """A base whose Linear layers take a ``--fast`` path without backward (emulated by a class swap)."""
    import comfy.ops

    class FastLinear(comfy.ops.manual_cast.Linear):
        def forward_comfy_cast_weights(self, input):
            return _NoBackward.apply(input, self.weight, self.bias)

    model = tiny_sd15_patcher(seed=0)
    unet = model.model.diffusion_model
    for module in unet.modules():
        if type(module) is comfy.ops.disable_weight_init.Linear:
            module.__class__ = FastLinear
    p3s = patching.new_p3s_model(model, ENCODER, "injection")
    gen = torch.Generator().manual_seed(4)
    data = core.training.settings.TrainingData(
        torch.randn(1, 4, 8, 8, generator=gen),
        torch.randn(1, 17, 16, generator=gen),
        torch.ones(1, 4, 4),
        torch.randn(1, 7, 32, generator=gen),
        torch.randn(1, 7, 32, generator=gen),
    )
    sigmas = model.get_model_object("model_sampling").sigmas
    settings = core.training.settings.TrainSettings(epochs=1, lr=1e-3)
    with pytest.raises(RuntimeError, match="no backward"):
        core.training.loop.train_p3s(p3s, unet, sigmas, data, settings)
    history = core.training.loop.train_p3s(
        p3s, unet, sigmas, data, settings, frozen_context=lambda: placement.plain_ops_for_training(unet)
    )
    assert len(history.total) == 1 and not p3s.injection_is_zero()
    assert all("forward" not in vars(m) for m in unet.modules()), "the fast ops are back after training"


@pytest.mark.parametrize("scope", ["full", "attention"])
def test_fast_ops_of_the_copys_own_layers_fall_back_too(scope, tmp_path, monkeypatch):
    """The ``full`` and ``attention`` copies own deep copies of the base's layers, ``--fast`` class
    included: P3S Fine-tune swaps theirs as well as the frozen U-Net's while training."""
    import comfy.ops
    import folder_paths

    class FastLinear(comfy.ops.manual_cast.Linear):
        def forward_comfy_cast_weights(self, input):
            return _NoBackward.apply(input, self.weight, self.bias)

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "p3s", ([str(tmp_path)], {".safetensors"}))
    with torch.inference_mode():
        model = tiny_sd15_patcher(seed=0)
    for module in model.model.diffusion_model.modules():
        if type(module) is comfy.ops.disable_weight_init.Linear:
            module.__class__ = FastLinear
    p3s, _, overlays = fine_tune(model, "", scope)
    own = [m for m in p3s.copy.modules() if type(m) is FastLinear]
    assert own, "the copy's own layers keep the base's op class"
    assert not p3s.injection_is_zero() and torch.isfinite(overlays).all()
    assert all("forward" not in vars(m) for m in own), "put back after training"
