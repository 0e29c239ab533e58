"""ComfyUI's compute-dtype override (ModelComputeDtype, ``set_model_compute_dtype``) honoured.

The override is an object patch on the MODEL (``manual_cast_dtype``) plus ``force_cast_weights``;
ComfyUI writes it onto the model only while that clone is loaded, so ``model.model`` does not show
it. A tiny base stored in fp16 with plain ops, told to compute in bf16, as a user does on a card
where fp16 overflows.
"""

from __future__ import annotations

import pytest
import torch

from devtools.pack_modules import import_pack_module

from .test_base_dtypes import apply, fine_tune, make_base, sampled
from .test_finetune_node import StandinClipVision

init_node = import_pack_module("nodes.p3s_init_node")
placement = import_pack_module("nodes.p3s_placement")


@pytest.fixture
def p3s_folder(tmp_path, monkeypatch):
    import folder_paths

    finetune = import_pack_module("nodes.finetune_node")
    monkeypatch.setitem(folder_paths.folder_names_and_paths, finetune.P3S_FOLDER, ([str(tmp_path)], {".safetensors"}))
    return tmp_path


def bf16_override_of_an_fp16_base():
    base = make_base("fp16").clone()
    base.set_model_compute_dtype(torch.bfloat16)
    return base


def test_the_override_is_the_compute_dtype():
    base = bf16_override_of_an_fp16_base()
    assert base.model.manual_cast_dtype is None, "not written onto the model while it is not loaded"
    assert placement.base_compute_dtype(base) == torch.bfloat16


@pytest.mark.parametrize("scope", ["full", "attention"])
def test_init_apply_and_fine_tune_then_apply_under_the_override(scope, p3s_folder):
    import comfy.model_management

    base = bf16_override_of_an_fp16_base()
    plain = sampled(base)

    def unloaded():  # as in a fresh run: the override is not on the model before ComfyUI loads it
        comfy.model_management.unload_all_models()
        return base

    with torch.inference_mode():
        p3s = init_node.P3SInit.execute(unloaded(), StandinClipVision(), scope).result[0]
    assert torch.equal(sampled(apply(unloaded(), p3s)), plain), "an untrained P3S model changes nothing"
    assert {p.dtype for p in p3s.parameters()} == {torch.bfloat16}, "placed in the dtype the base computes in"
    trained, _, overlays = fine_tune(unloaded(), "", scope)
    assert torch.isfinite(overlays).all()
    out = sampled(apply(unloaded(), trained))
    assert torch.isfinite(out).all() and (out - plain).abs().max() > 0
