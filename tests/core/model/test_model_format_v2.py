"""File format 2 on the tiny model: only what the model owns, bit-exact in its storage dtype, the
same sampling output after a reload; format-1 files (a whole copy) still load; a file trained on
one base is refused on another with both fingerprints; the fingerprint ignores storage dtype."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from devtools.tiny_models import tiny_sd15_patcher

from ..p3s_support import ENCODER, import_pack_module, randomise_injection, sample

patching = import_pack_module("nodes.p3s_patching")
model_file = import_pack_module("p3s_core.model.model_file")
p3s_model = import_pack_module("p3s_core.model.p3s_model")
fingerprints = import_pack_module("p3s_core.model.base_fingerprint")
errors = import_pack_module("p3s_core.errors")


def trained_like(p3s, dtype: torch.dtype) -> None:
    """Random injections and adapters, rounded to ``dtype`` so that storing in it is exact."""
    randomise_injection(p3s)
    with torch.no_grad():
        for name, param in p3s.named_parameters():
            if name.endswith(".up.weight") or ".attn1." in name:
                param.normal_(std=0.02)
            param.copy_(param.to(dtype).float())


@pytest.mark.parametrize(("scope", "dtype", "torch_dtype"), [("lora", "fp16", torch.float16),
                                                             ("attention", "bf16", torch.bfloat16),
                                                             ("injection", "fp16", torch.float16)])  # fmt: skip
def test_v2_round_trip_is_bit_exact_and_samples_the_same(base, hint, tmp_path, scope, dtype, torch_dtype):
    p3s = patching.new_p3s_model(base, ENCODER, scope, lora_rank=4)
    trained_like(p3s, torch_dtype)
    expected = sample(patching.apply_p3s(base, p3s, hint))
    path = tmp_path / f"{scope}.safetensors"
    model_file.save_p3s_model(path, p3s.state_dict(), p3s.config, {"epochs": 1}, dtype=dtype)
    tensors, info = model_file.load_p3s_model(path)
    assert info.format_version == 2 and info.scope == scope and info.dtype == dtype
    assert info.base_fingerprint == fingerprints.fingerprint(p3s.base_signature)
    assert tensors.keys() == p3s.state_dict().keys(), "the file holds exactly what the model owns"
    assert all(t.dtype == torch_dtype for t in tensors.values())
    unet_keys = set(base.model.diffusion_model.state_dict())
    assert not any(k[len("copy.") :] in unet_keys for k in tensors if scope != "attention"), "no shared weights"
    with torch.inference_mode():
        loaded = patching.p3s_model_from_file(base, tensors, info.config)
    assert loaded.scope == scope
    for key, value in loaded.state_dict().items():
        assert torch.equal(value.to(torch_dtype), tensors[key]) and torch.equal(value, p3s.state_dict()[key]), key
    assert torch.equal(sample(patching.apply_p3s(base, loaded, hint)), expected)


def write_v1_file(path, p3s) -> None:
    """A format-1 file as the format-1 code wrote it: the whole copy, no scope, no fingerprint."""
    config = {
        "format_version": 1,
        "architecture": "p3s-sd15",
        "encoder": dict(p3s.encoder.config),
        "sites": [s.key for s in p3s.sites],
    }
    metadata = {
        "p3s.format": "p3s-model",
        "p3s.format_version": "1",
        "p3s.base": "sd15",
        "p3s.dtype": "fp32",
        "p3s.config": json.dumps(config, sort_keys=True),
        "p3s.training": json.dumps({"epochs": 60, "scope": "injection"}),
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": "stable-diffusion-v1/p3s",
    }
    tensors = {k: v.detach().contiguous().clone() for k, v in p3s.state_dict().items()}
    save_file(tensors, str(path), metadata=metadata)


def test_a_v1_file_with_a_whole_copy_still_loads(base, hint, tmp_path):
    p3s = patching.new_p3s_model(base, ENCODER, "full", injection_rank=0)  # v1: full layers
    randomise_injection(p3s)
    with torch.no_grad():
        p3s.copy.out[2].weight.add_(0.05)
    expected = sample(patching.apply_p3s(base, p3s, hint))
    path = tmp_path / "v1.safetensors"
    write_v1_file(path, p3s)
    tensors, info = model_file.load_p3s_model(path)
    assert (info.format_version, info.scope, info.base_fingerprint) == (1, "full", "")
    loaded = patching.p3s_model_from_file(base, tensors, info.config)
    assert loaded.scope == "full"
    assert torch.equal(loaded.copy.out[2].weight, p3s.copy.out[2].weight)
    assert torch.equal(sample(patching.apply_p3s(base, loaded, hint)), expected)


def test_a_file_from_another_base_is_refused_naming_both_fingerprints(base, tmp_path):
    p3s = patching.new_p3s_model(base, ENCODER, "injection")
    path = tmp_path / "other.safetensors"
    model_file.save_p3s_model(path, p3s.state_dict(), p3s.config)
    tensors, info = model_file.load_p3s_model(path)
    other = tiny_sd15_patcher(seed=1)
    theirs = fingerprints.fingerprint(p3s_model.check_same_base({}, other.model.diffusion_model.state_dict()))
    with pytest.raises(errors.P3SInputError, match="another base U-Net") as raised:
        patching.p3s_model_from_file(other, tensors, info.config)
    assert info.base_fingerprint in str(raised.value) and theirs in str(raised.value)
    assert info.base_fingerprint != theirs


def test_fingerprint_is_the_same_for_the_base_in_fp16_bf16_and_fp32(base):
    state = base.model.diffusion_model.state_dict()
    signature = fingerprints.base_signature(state)
    for dtype in (torch.float16, torch.bfloat16):
        stored = fingerprints.base_signature({k: v.to(dtype) for k, v in state.items()})
        assert fingerprints.signatures_match(signature, stored), dtype
    other = fingerprints.base_signature(tiny_sd15_patcher(seed=2).model.diffusion_model.state_dict())
    assert not fingerprints.signatures_match(signature, other)
