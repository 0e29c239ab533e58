"""The P3S model file: exact round trips, atomic writes, clear refusals, safe names."""

import json
import os

import pytest
import torch
from safetensors.torch import save_file

import p3s_core.model.model_file as model_file
from p3s_core.errors import P3SInputError
from p3s_core.model.model_file import FORMAT_VERSION, P3SModelInfo, load_p3s_model, resolve_model_path, save_p3s_model

CONFIG = {"copy": "full_unet", "injection": {"blocks": 16, "attn": ["attn1", "attn2"]}}
TRAINING = {"epochs": 60, "lr": 1e-5, "gamma": 0.1, "prompt": "a photo of sks dog"}


def _tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "copy.input_blocks.1.weight": torch.randn(8, 4, 3, 3, generator=g),
        "inject.input_4.attn1.weight": torch.randn(16, 16, generator=g) * 1e-3,
        "inject.input_4.attn1.bias": torch.zeros(16),
        "copy.position_ids": torch.arange(77, dtype=torch.int64),
    }


def _files(folder) -> list[str]:
    return sorted(os.listdir(folder))


def test_fp32_round_trip_is_bit_exact(tmp_path):
    tensors = _tensors()
    path = tmp_path / "dog.safetensors"
    save_p3s_model(path, tensors, CONFIG, TRAINING, dtype="fp32")
    loaded, info = load_p3s_model(path)
    assert loaded.keys() == tensors.keys()
    for key, tensor in tensors.items():
        assert loaded[key].dtype == tensor.dtype
        assert torch.equal(loaded[key], tensor), key
    assert info == P3SModelInfo(FORMAT_VERSION, "sd15", "fp32", CONFIG, TRAINING)


@pytest.mark.parametrize(("dtype", "torch_dtype"), [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_half_storage_round_trip_is_exact_for_representable_values(tmp_path, dtype, torch_dtype):
    representable = {k: (v.to(torch_dtype).float() if v.is_floating_point() else v) for k, v in _tensors(1).items()}
    path = tmp_path / f"dog_{dtype}.safetensors"
    save_p3s_model(path, representable, CONFIG, None, dtype=dtype)
    loaded, info = load_p3s_model(path)
    assert info.dtype == dtype and info.training is None
    for key, tensor in representable.items():
        if tensor.is_floating_point():
            assert loaded[key].dtype == torch_dtype
            assert torch.equal(loaded[key].float(), tensor), key
        else:
            assert loaded[key].dtype == torch.int64 and torch.equal(loaded[key], tensor)
    # Storing really halves the floating-point payload.
    full = tmp_path / "full.safetensors"
    save_p3s_model(full, representable, CONFIG, None, dtype="fp32")
    assert path.stat().st_size < full.stat().st_size


def test_saves_views_and_inference_tensors(tmp_path):
    base = torch.randn(4, 6)
    with torch.inference_mode():
        made_in_inference = torch.randn(3, 3)
    tensors = {"view": base[:, ::2], "shared": base, "inference": made_in_inference}
    save_p3s_model(tmp_path / "m.safetensors", tensors, CONFIG, dtype="fp32")
    loaded, _ = load_p3s_model(tmp_path / "m.safetensors")
    assert torch.equal(loaded["view"], base[:, ::2]) and torch.equal(loaded["inference"], made_in_inference)


def test_metadata_is_namespaced_and_readable_by_other_tools(tmp_path):
    from safetensors import safe_open

    path = tmp_path / "m.safetensors"
    save_p3s_model(path, _tensors(), CONFIG, TRAINING, dtype="fp16")
    with safe_open(str(path), "pt") as handle:
        meta = handle.metadata()
    assert meta["p3s.format_version"] == str(FORMAT_VERSION)
    assert meta["p3s.base"] == "sd15"
    assert json.loads(meta["p3s.config"]) == CONFIG
    assert json.loads(meta["p3s.training"]) == TRAINING
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/p3s"


def test_refuses_to_overwrite_unless_asked(tmp_path):
    path = tmp_path / "m.safetensors"
    save_p3s_model(path, _tensors(0), CONFIG, dtype="fp32")
    with pytest.raises(P3SInputError, match="already exists"):
        save_p3s_model(path, _tensors(1), CONFIG, dtype="fp32")
    assert torch.equal(
        load_p3s_model(path)[0]["inject.input_4.attn1.weight"], _tensors(0)["inject.input_4.attn1.weight"]
    )
    save_p3s_model(path, _tensors(1), CONFIG, dtype="fp32", overwrite=True)
    assert torch.equal(
        load_p3s_model(path)[0]["inject.input_4.attn1.weight"], _tensors(1)["inject.input_4.attn1.weight"]
    )
    assert _files(tmp_path) == ["m.safetensors"]


def test_failure_mid_write_leaves_no_file_and_no_temp(tmp_path, monkeypatch):
    def write_half_then_fail(tensors, filename, metadata=None):
        with open(filename, "wb") as stream:
            stream.write(b"\x00" * 1000)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(model_file, "save_file", write_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        save_p3s_model(tmp_path / "m.safetensors", _tensors(), CONFIG, dtype="fp32")
    assert _files(tmp_path) == []


def test_failed_overwrite_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    save_p3s_model(path, _tensors(0), CONFIG, dtype="fp32")

    def failing_replace(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(model_file.os, "replace", failing_replace)
    with pytest.raises(OSError, match="rename failed"):
        save_p3s_model(path, _tensors(1), CONFIG, dtype="fp32", overwrite=True)
    monkeypatch.undo()
    assert _files(tmp_path) == ["m.safetensors"]
    assert torch.equal(load_p3s_model(path)[0]["copy.input_blocks.1.weight"], _tensors(0)["copy.input_blocks.1.weight"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dtype": "int8"}, "Unknown storage dtype 'int8'"),
        ({"base": "sd21"}, "Unknown base architecture 'sd21'"),
        ({"config": {"bad": {1, 2}}}, "config cannot be stored as JSON"),
        ({"config": None}, "config must be a dict"),
        ({"training": {"lr": float("nan")}}, "training cannot be stored as JSON"),
        ({"tensors": {}}, "no tensors"),
        ({"tensors": {"a": [1.0]}}, "not a named tensor"),
    ],
)
def test_save_refuses_bad_arguments(tmp_path, kwargs, message):
    arguments = {"tensors": _tensors(), "config": CONFIG, "training": None, "dtype": "fp32"} | kwargs
    with pytest.raises(P3SInputError, match=message):
        save_p3s_model(tmp_path / "m.safetensors", **arguments)
    assert _files(tmp_path) == []


def test_save_refuses_other_extensions(tmp_path):
    with pytest.raises(P3SInputError, match=r"end in \.safetensors"):
        save_p3s_model(tmp_path / "m.ckpt", _tensors(), CONFIG)


def test_load_refuses_random_bytes(tmp_path):
    path = tmp_path / "noise.safetensors"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(P3SInputError, match=r"not a readable \.safetensors file.*corrupt"):
        load_p3s_model(path)


def test_load_refuses_truncated_file(tmp_path):
    path = tmp_path / "m.safetensors"
    save_p3s_model(path, _tensors(), CONFIG, dtype="fp32")
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 5):
        path.write_bytes(data[:cut])
        with pytest.raises(P3SInputError, match="corrupt or was cut off"):
            load_p3s_model(path)


def test_load_refuses_foreign_safetensors(tmp_path):
    lora = tmp_path / "style_lora.safetensors"
    save_file(
        {"lora_unet_down_blocks_0.lora_down.weight": torch.zeros(4, 8)},
        str(lora),
        metadata={"ss_network_module": "networks.lora"},
    )
    with pytest.raises(P3SInputError, match=r"not a P3S model.*looks like a LoRA"):
        load_p3s_model(lora)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(P3SInputError, match="not a P3S model"):
        load_p3s_model(plain)


def _save_with_metadata(path, **changes):
    meta = {
        "p3s.format": "p3s-model",
        "p3s.format_version": str(FORMAT_VERSION),
        "p3s.base": "sd15",
        "p3s.dtype": "fp32",
        "p3s.config": json.dumps(CONFIG),
        "p3s.training": "null",
    } | changes
    save_file({"w": torch.ones(2)}, str(path), metadata=meta)


def test_load_refuses_newer_format_version(tmp_path):
    path = tmp_path / "future.safetensors"
    _save_with_metadata(path, **{"p3s.format_version": str(FORMAT_VERSION + 1)})
    with pytest.raises(P3SInputError, match=r"newer than this pack reads.*update"):
        load_p3s_model(path)


def test_load_refuses_base_mismatch_unless_unchecked(tmp_path):
    path = tmp_path / "xl.safetensors"
    _save_with_metadata(path, **{"p3s.base": "sdxl"})
    with pytest.raises(P3SInputError, match=r"trained on base model 'sdxl'.*uses 'sd15'"):
        load_p3s_model(path)
    _, info = load_p3s_model(path, expected_base=None)
    assert info.base == "sdxl"


def test_load_refuses_broken_metadata_and_missing_file(tmp_path):
    path = tmp_path / "broken.safetensors"
    _save_with_metadata(path, **{"p3s.config": "{not json"})
    with pytest.raises(P3SInputError, match=r"broken p3s\.config"):
        load_p3s_model(path)
    _save_with_metadata(path, **{"p3s.format_version": "one"})
    with pytest.raises(P3SInputError, match="broken format version"):
        load_p3s_model(path)
    with pytest.raises(P3SInputError, match="No P3S model file"):
        load_p3s_model(tmp_path / "missing.safetensors")


def test_resolve_model_path_finds_files_in_any_root(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    (second / "dogs").mkdir(parents=True)
    first.mkdir()
    (second / "dogs" / "rex.safetensors").write_bytes(b"x")
    assert resolve_model_path([first, second], "dogs/rex.safetensors") == second / "dogs" / "rex.safetensors"
    assert resolve_model_path([first, second], "dogs\\rex.safetensors") == second / "dogs" / "rex.safetensors"
    assert resolve_model_path([first, second], "new.safetensors", must_exist=False) == first / "new.safetensors"
    with pytest.raises(P3SInputError, match=r"No P3S model named 'gone\.safetensors'"):
        resolve_model_path([first, second], "gone.safetensors")


@pytest.mark.parametrize(
    "name",
    [
        "../x.safetensors",
        "dogs/../../x.safetensors",
        "/etc/passwd",
        "\\\\server\\share\\x",
        "C:/x.safetensors",
        "..\\x",
    ],
)
def test_resolve_model_path_refuses_escaping_names(tmp_path, name):
    with pytest.raises(P3SInputError, match="outside the models folder"):
        resolve_model_path([tmp_path], name, must_exist=False)


def test_resolve_model_path_refuses_empty_name(tmp_path):
    with pytest.raises(P3SInputError, match="model_name is empty"):
        resolve_model_path([tmp_path], " ")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
def test_load_refuses_weights_that_are_not_finite_naming_the_tensor(tmp_path, bad, dtype):
    tensors = _tensors()
    tensors["inject.input_4.attn1.weight"][3, 5] = bad
    path = tmp_path / "diverged.safetensors"
    save_p3s_model(path, tensors, CONFIG, TRAINING, dtype=dtype)
    with pytest.raises(P3SInputError, match=r"diverged.safetensors: tensor 'inject.input_4.attn1.weight' holds NaN"):
        load_p3s_model(path)


def test_the_finite_check_reads_large_tensors_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(model_file, "FINITE_CHECK_CHUNK", 7)
    tensors = {"big": torch.zeros(10, 10)}
    tensors["big"][9, 9] = float("nan")  # in the last chunk only
    path = tmp_path / "late_nan.safetensors"
    save_p3s_model(path, tensors, CONFIG, TRAINING)
    with pytest.raises(P3SInputError, match="tensor 'big' holds NaN"):
        load_p3s_model(path)
    tensors["big"][9, 9] = 0.0
    save_p3s_model(path, tensors, CONFIG, TRAINING, overwrite=True)
    assert load_p3s_model(path)[0]["big"].abs().sum() == 0


def test_load_refuses_a_header_larger_than_a_p3s_file_needs_before_parsing_it(tmp_path):
    path = tmp_path / "huge_metadata.safetensors"
    _save_with_metadata(path, **{"p3s.training": json.dumps({"note": "x" * (model_file.MAX_HEADER_BYTES + 1)})})
    with pytest.raises(P3SInputError, match=r"header of 8\.0 MB; a P3S model needs at most 8 MB"):
        load_p3s_model(path)
