"""The nodes end to end on bases stored the way GPU users' ComfyUI stores them, emulated on the CPU.

Each base is the tiny SD1.5-shaped model, and the tiny SDXL-shaped one (ComfyUI's SDXL classes: depth-2
blocks, ``y``), with ComfyUI's own ops for that storage: bf16 and fp16
weights with plain ops (inputs must match the weights, no autocast at sampling), bf16 weights
with manual_cast to fp32, and fp8 (e4m3) storage with manual_cast to bf16. The pipeline is the
shipped example's: P3S Init -> Apply -> sample (bit-identical to plain sampling), P3S Fine-tune
with attention overlays -> Apply -> sample, P3S Loader -> Apply -> sample.
"""

from __future__ import annotations

import pytest
import torch

from devtools.pack_modules import import_pack_module, pack_core
from devtools.tiny_models import tiny_sd15_patcher, tiny_sdxl_patcher

from .test_finetune_node import StandinClip, StandinClipVision, StandinVae, references
from .test_finetune_sdxl import CONTEXT as SDXL_CONTEXT
from .test_finetune_sdxl import POOLED as SDXL_POOLED
from .test_finetune_sdxl import StandinSdxlClip

finetune = import_pack_module("nodes.finetune_node")
init_node = import_pack_module("nodes.p3s_init_node")
apply_node = import_pack_module("nodes.p3s_apply_node")
loader_node = import_pack_module("nodes.loader_node")

BASES = {  # storage dtype, manual_cast compute dtype
    "bf16": (torch.bfloat16, None),
    "fp16": (torch.float16, None),
    "bf16_manual_cast": (torch.bfloat16, torch.float32),
    "fp8_manual_cast": (torch.float8_e4m3fn, torch.bfloat16),
}


ARCHITECTURES = {"sd15": (tiny_sd15_patcher, StandinClip), "sdxl": (tiny_sdxl_patcher, StandinSdxlClip)}


def make_base(kind: str, architecture: str = "sd15"):
    dtype, compute = BASES[kind]
    with torch.inference_mode():  # as ComfyUI's checkpoint loader makes it
        return ARCHITECTURES[architecture][0](seed=0, dtype=dtype, manual_cast_dtype=compute)


def _architecture(base) -> str:
    return "sdxl" if base.model.model_config.unet_config.get("adm_in_channels") else "sd15"


def apply(base, p3s):
    images, mask = references()
    with torch.inference_mode():
        return apply_node.P3SApply.execute(
            base, p3s, images, mask, StandinVae(), StandinClipVision(), 1.0, 0.0, 1.0, False, "cycle"
        ).result[0]


def fine_tune(base, save_name: str, scope: str = "full", checkpointing: bool = False):
    images, mask = references()
    with torch.inference_mode():
        return finetune.P3SFineTune.execute(
            base, ARCHITECTURES[_architecture(base)][1](), StandinVae(), StandinClipVision(), images, mask,
            "a photo of sks disc", 1, 1e-2, 0.1, 0.0, 64, 1, 3, "auto", scope, checkpointing, save_name, False,
            attention_word="sks",
        ).result  # fmt: skip


@pytest.fixture
def p3s_folder(tmp_path, monkeypatch):
    import folder_paths

    monkeypatch.setitem(folder_paths.folder_names_and_paths, finetune.P3S_FOLDER, ([str(tmp_path)], {".safetensors"}))
    return tmp_path


def sampled(model, steps: int = 3) -> torch.Tensor:
    """Euler + CFG sampling of an 8x8 latent with fixed seeds, in inference mode as ComfyUI runs it."""
    import comfy.sample

    gen = torch.Generator().manual_seed(3)
    if _architecture(model) == "sdxl":  # SDXL's conditioning carries the pooled text for its y
        positive = [
            [
                torch.randn(1, 7, SDXL_CONTEXT, generator=gen),
                {"pooled_output": torch.randn(1, SDXL_POOLED, generator=gen)},
            ]
        ]
        negative = [
            [
                torch.randn(1, 7, SDXL_CONTEXT, generator=gen),
                {"pooled_output": torch.randn(1, SDXL_POOLED, generator=gen)},
            ]
        ]
    else:
        positive = [[torch.randn(1, 7, 32, generator=gen), {}]]
        negative = [[torch.randn(1, 7, 32, generator=gen), {}]]
    latent = torch.zeros(1, 4, 8, 8)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        return comfy.sample.sample(
            model, noise, steps, 4.0, "euler", "normal", positive, negative, latent, seed=1, disable_pbar=True
        )


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
@pytest.mark.parametrize("kind", list(BASES))
def test_init_apply_samples_bit_identical_to_plain(kind, architecture):
    base = make_base(kind, architecture)
    plain = sampled(base)
    with torch.inference_mode():
        p3s = init_node.P3SInit.execute(base, StandinClipVision()).result[0]
    out = sampled(apply(base, p3s))
    assert torch.isfinite(out).all()
    assert torch.equal(out, plain), "an untrained P3S model changes nothing"


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
@pytest.mark.parametrize("kind", list(BASES))
def test_fine_tune_with_overlays_then_apply_and_loader_then_apply(kind, architecture, p3s_folder):
    base = make_base(kind, architecture)
    plain = sampled(base)
    p3s, _, overlays = fine_tune(base, "subject.safetensors")
    assert (p3s_folder / "subject.safetensors").is_file(), "the file is written"
    assert overlays.shape[0] == 3 and torch.isfinite(overlays).all()
    trained = sampled(apply(base, p3s))
    assert torch.isfinite(trained).all()
    assert (trained - plain).abs().max() > 0, "the trained model changes the output"
    with torch.inference_mode():
        loaded = loader_node.P3SLoaderNode.execute("subject.safetensors").result[0]
    from_file = sampled(apply(base, loaded))
    assert torch.isfinite(from_file).all()
    assert (from_file - plain).abs().max() > 0
    model = pack_core(finetune).model.p3s_model
    assert isinstance(p3s, model.P3SModel)


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
@pytest.mark.parametrize("scope", ["attention", "lora", "injection", "auto"])
def test_a_scope_sharing_the_base_trains_checkpointed_and_applies_on_a_bf16_base(scope, architecture, p3s_folder):
    """Scopes that share the base run its own bf16 modules inside the copy, checkpointed; ``auto``
    is the shipped example's setting."""
    base = make_base("bf16", architecture)
    plain = sampled(base)
    p3s, _, overlays = fine_tune(base, "", scope, checkpointing=True)
    assert torch.isfinite(overlays).all()
    out = sampled(apply(base, p3s))
    assert torch.isfinite(out).all() and (out - plain).abs().max() > 0
