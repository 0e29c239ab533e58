"""P3S Fine-tune on the tiny SDXL-shaped MODEL (ComfyUI's SDXL classes): it trains a few steps with
SDXL's ``y`` passed to both passes, saves an SDXL file, trains a v-prediction MODEL against v and an
EDM one (as ComfyUI builds Playground 2.5) over its continuous noise levels, and refuses a flow one."""

from __future__ import annotations

import math

import pytest
import torch

from devtools.pack_modules import import_pack_module, pack_core
from devtools.tiny_models import tiny_sdxl_patcher

from .test_finetune_node import StandinClip, StandinClipVision, StandinVae, references

node = import_pack_module("nodes.finetune_node")
POOLED = 32
CONTEXT = 64


class StandinSdxlClip(StandinClip):
    """Contexts ``[1, 77, 64]`` and pooled outputs ``[1, 32]`` (the tiny SDXL model's widths) from the tokens."""

    def encode_from_tokens(self, tokens: dict, return_pooled: bool = False):
        ids = [token[0] for chunk in tokens["l"] for token in chunk]
        gen = torch.Generator().manual_seed(sum(i * (n + 1) for n, i in enumerate(ids)) % 2**31)
        context = torch.randn(1, len(ids), CONTEXT, generator=gen)
        pooled = torch.randn(1, POOLED, generator=gen)
        return (context, pooled) if return_pooled else context

    def encode_from_tokens_scheduled(self, tokens: dict) -> list:
        context, pooled = self.encode_from_tokens(tokens, return_pooled=True)
        return [[context, {"pooled_output": pooled}]]


@pytest.fixture
def p3s_folder(tmp_path, monkeypatch):
    import folder_paths

    monkeypatch.setitem(folder_paths.folder_names_and_paths, node.P3S_FOLDER, ([str(tmp_path)], {".safetensors"}))
    return tmp_path


def run(model, save_name: str = "", epochs: int = 2, scope: str = "injection", **extra):
    images, mask = references()
    with torch.inference_mode():  # as ComfyUI executes every node
        return node.P3SFineTune.execute(
            model, StandinSdxlClip(), StandinVae(), StandinClipVision(), images, mask,
            "a photo of sks disc", epochs, 1e-3, 0.1, 0.1, 64, 1, 3, "auto", scope, False, save_name, False, **extra,
        )  # fmt: skip


def test_finetune_on_sdxl_passes_y_and_saves_an_sdxl_model(p3s_folder):
    model = tiny_sdxl_patcher(seed=0)
    ys: list[torch.Tensor] = []
    handle = model.model.diffusion_model.register_forward_pre_hook(
        lambda _m, _args, kwargs: ys.append(kwargs["y"]), with_kwargs=True
    )
    try:
        out = run(model, "xl/disc.safetensors")
    finally:
        handle.remove()
    p3s = out.result[0]
    assert out.ui["text"][0] == "saved xl/disc.safetensors"
    assert p3s.base == "sdxl" and not p3s.injection_is_zero(), "the zero layers learned"
    # Injection scope: the copy's pass is the base U-Net too, so every pass of every step is seen here.
    assert len(ys) >= 4 and all(y is not None and y.shape[-1] == POOLED + 6 * 256 for y in ys)
    model_file = pack_core(node).model.model_file
    tensors, info = model_file.load_p3s_model(p3s_folder / "xl" / "disc.safetensors", expected_base=None)
    assert info.base == "sdxl" and info.config["architecture"] == "p3s-sdxl"
    assert "injection.output_5_1.attn2.weight" in tensors


def test_an_sdxl_checkpoint_records_its_base_and_resumes_exactly(p3s_folder):
    whole = run(tiny_sdxl_patcher(seed=0), "xl.safetensors", epochs=2, save_every=1).result[0]
    model_file = pack_core(node).model.model_file
    tensors, info = model_file.load_p3s_model(p3s_folder / "xl_e0001.safetensors", expected_base=None)
    assert info.base == "sdxl" and info.resume == {"epoch": 1}
    checkpoint = model_file.P3SModelFile(tensors, info, name="xl_e0001.safetensors")
    resumed = run(tiny_sdxl_patcher(seed=0), "", epochs=2, continue_from=checkpoint).result[0]
    for key, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


def test_prior_preservation_on_sdxl_gives_the_class_images_the_class_prompts_y():
    model = tiny_sdxl_patcher(seed=0)
    ys: list[torch.Tensor] = []
    handle = model.model.diffusion_model.register_forward_pre_hook(
        lambda _m, _args, kwargs: ys.append(kwargs["y"]), with_kwargs=True
    )
    given = torch.rand(2, 48, 48, 3, generator=torch.Generator().manual_seed(2))
    try:
        prior = {"prior_loss_weight": 0.5, "class_images": given, "class_prompt": "a disc"}
        out = run(model, epochs=1, attention_word="sks", **prior)
    finally:
        handle.remove()
    assert not out.result[0].injection_is_zero()
    width = POOLED + 6 * 256
    assert ys and all(y.shape[-1] == width for y in ys)
    assert len({tuple(y[0, :POOLED].tolist()) for y in ys}) >= 2, "the caption's and the class prompt's pooled text"


def test_finetune_on_a_v_prediction_sdxl_trains_against_v_and_records_it(p3s_folder):
    import comfy.model_base

    model = tiny_sdxl_patcher(seed=0)
    vpred = comfy.model_base.model_sampling(model.model.model_config, comfy.model_base.ModelType.V_PREDICTION)
    model.add_object_patch("model_sampling", vpred)
    out = run(model, "xl/v.safetensors", epochs=1)
    assert not out.result[0].injection_is_zero()
    info = pack_core(node).model.model_file.load_p3s_model(p3s_folder / "xl" / "v.safetensors", expected_base=None)[1]
    assert info.training["prediction"] == "v"
    assert out.ui["text"][1].startswith("subject loss "), "the learning check ran against the v target"


def _playground_style(model):
    """The tiny SDXL model as ComfyUI builds a Playground 2.5 checkpoint (``edm_mean``/``edm_std`` in
    its state dict): EDM prediction, continuous sigmas 0.002-80, sigma_data 0.5."""
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models

    config = comfy.supported_models.SDXL(dict(model.model.model_config.unet_config))
    config.set_inference_dtype(torch.float32, None)
    edm = config.get_model({"edm_mean": torch.zeros(1), "edm_std": torch.ones(1)})
    edm.diffusion_model.load_state_dict(model.model.diffusion_model.state_dict())
    return comfy.model_patcher.ModelPatcher(edm, load_device=model.load_device, offload_device=model.offload_device)


def test_finetune_on_an_edm_sdxl_trains_with_its_noise_levels_and_records_it(p3s_folder):
    import comfy.model_sampling

    model = _playground_style(tiny_sdxl_patcher(seed=0))
    sampling = model.get_model_object("model_sampling")
    assert isinstance(sampling, comfy.model_sampling.ModelSamplingContinuousEDM) and float(sampling.sigma_data) == 0.5
    timesteps: list[float] = []
    unet = model.model.diffusion_model
    handle = unet.register_forward_pre_hook(lambda _m, args: timesteps.extend(args[1].flatten().tolist()))
    try:
        out = run(model, "xl/edm.safetensors", epochs=1)
    finally:
        handle.remove()
    assert not out.result[0].injection_is_zero()
    info = pack_core(node).model.model_file.load_p3s_model(p3s_folder / "xl" / "edm.safetensors", expected_base=None)[1]
    assert info.training["prediction"] == "edm"
    low, high = 0.25 * math.log(0.002), 0.25 * math.log(80.0)  # ComfyUI's EDM timestep: 0.25 ln sigma
    assert timesteps and all(low - 1e-4 <= t <= high + 1e-4 for t in timesteps), "continuous timesteps, not indices"
    assert out.ui["text"][1].startswith("subject loss "), "the learning check ran against the EDM target"


def test_finetune_refuses_a_flow_model():
    import comfy.model_sampling

    model = tiny_sdxl_patcher(seed=0)
    flow = type("Sampling", (comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST), {})
    model.add_object_patch("model_sampling", flow(model.model.model_config))
    with pytest.raises(pack_core(node).errors.P3SInputError, match="not a flow or x0 one"):
        run(model)
