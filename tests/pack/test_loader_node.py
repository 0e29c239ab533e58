"""The ``p3s`` model folder and ``P3S Loader`` in-process."""

import json
import os

import pytest
import torch

from devtools.pack_modules import import_pack_module, pack_core
from p3s_core.model.model_file import save_p3s_model

CONFIG = {"copy": "full_unet", "blocks": 16}


@pytest.fixture(scope="module")
def loader_module():
    return import_pack_module("nodes.loader_node")


@pytest.fixture(scope="module")
def folder_module():
    return import_pack_module("nodes.model_folder")


def test_register_p3s_folder_is_idempotent(comfy_tmp_dirs, folder_module):
    import folder_paths

    default = os.path.join(comfy_tmp_dirs["models"], "p3s")
    assert folder_module.register_p3s_folder() == [default]
    assert folder_module.register_p3s_folder() == [default]
    assert folder_paths.folder_names_and_paths["p3s"] == ([default], {".safetensors"})


def test_extra_model_paths_yaml_entry_is_kept(comfy_tmp_dirs, folder_module, tmp_path):
    import folder_paths
    from utils.extra_config import load_extra_path_config

    elsewhere = tmp_path / "shared_models" / "p3s"
    yaml_file = tmp_path / "extra_model_paths.yaml"
    yaml_file.write_text(f"mine:\n  p3s: {elsewhere}\n")
    load_extra_path_config(str(yaml_file))  # what ComfyUI does at start, before custom nodes load
    paths = folder_module.register_p3s_folder()
    assert paths == [str(elsewhere), os.path.join(comfy_tmp_dirs["models"], "p3s")]
    assert folder_module.register_p3s_folder() == paths
    assert folder_paths.folder_names_and_paths["p3s"][1] == {".safetensors"}


def _model_folder(comfy_tmp_dirs) -> str:
    folder = os.path.join(comfy_tmp_dirs["models"], "p3s")
    os.makedirs(os.path.join(folder, "dogs"), exist_ok=True)
    return folder


def test_loader_lists_only_safetensors_in_the_p3s_folder(comfy_tmp_dirs, loader_module):
    folder = _model_folder(comfy_tmp_dirs)
    save_p3s_model(os.path.join(folder, "rex.safetensors"), {"w": torch.ones(3)}, CONFIG)
    save_p3s_model(os.path.join(folder, "dogs", "fido.safetensors"), {"w": torch.ones(3)}, CONFIG)
    with open(os.path.join(folder, "notes.txt"), "w") as stream:
        stream.write("not a model")
    schema = loader_module.P3SLoaderNode.GET_SCHEMA()  # validated, as ComfyUI loads it
    assert schema.node_id == "P3SLoader" and schema.category == "P3S/model"
    assert schema.inputs[0].options == [os.path.join("dogs", "fido.safetensors"), "rex.safetensors"]
    assert [o.io_type for o in schema.outputs] == ["P3S_MODEL", "STRING"]
    assert schema.inputs[0].tooltip and all(o.tooltip for o in schema.outputs)


def test_loader_loads_tensors_and_info(comfy_tmp_dirs, loader_module):
    folder = _model_folder(comfy_tmp_dirs)
    tensors = {"inject.0.weight": torch.randn(4, 4), "copy.ids": torch.arange(5)}
    training = {"epochs": 60, "lr": 1e-5}
    save_p3s_model(os.path.join(folder, "dogs", "fido.safetensors"), tensors, CONFIG, training, dtype="fp32")
    loader_module.P3SLoaderNode.GET_SCHEMA()  # registers the folder, as ComfyUI does on start
    out = loader_module.P3SLoaderNode.execute(model_name="dogs/fido.safetensors")
    model, info_text = out.args
    assert isinstance(model, pack_core(loader_module).model.model_file.P3SModelFile)
    assert model.name == "dogs/fido.safetensors"
    assert model.tensors.keys() == tensors.keys()
    assert all(torch.equal(model.tensors[k], v) for k, v in tensors.items())
    assert (model.info.base, model.info.dtype, model.info.config, model.info.training) == (
        "sd15",
        "fp32",
        CONFIG,
        training,
    )
    summary = json.loads(info_text)
    assert summary["tensors"] == 2 and summary["parameters"] == 21 and summary["training"] == training


def test_loader_refuses_foreign_files_and_escaping_names(comfy_tmp_dirs, loader_module, tmp_path):
    from safetensors.torch import save_file

    folder = _model_folder(comfy_tmp_dirs)
    save_file({"lora_unet_x.lora_up.weight": torch.zeros(2, 2)}, os.path.join(folder, "style.safetensors"))
    outside = tmp_path / "secret.safetensors"
    save_p3s_model(outside, {"w": torch.ones(1)}, CONFIG)
    loader_module.P3SLoaderNode.GET_SCHEMA()
    error = pack_core(loader_module).errors.P3SInputError
    with pytest.raises(error, match="not a P3S model"):
        loader_module.P3SLoaderNode.execute(model_name="style.safetensors")
    with pytest.raises(error, match="outside the models folder"):
        loader_module.P3SLoaderNode.execute(model_name="../../secret.safetensors")
    with pytest.raises(error, match="outside the models folder"):
        loader_module.P3SLoaderNode.execute(model_name=str(outside))


def test_fingerprint_changes_when_the_file_is_replaced(comfy_tmp_dirs, loader_module):
    folder = _model_folder(comfy_tmp_dirs)
    path = os.path.join(folder, "rex.safetensors")
    save_p3s_model(path, {"w": torch.ones(3)}, CONFIG)
    loader_module.P3SLoaderNode.GET_SCHEMA()
    before = loader_module.P3SLoaderNode.fingerprint_inputs(model_name="rex.safetensors")
    save_p3s_model(path, {"w": torch.ones(300)}, CONFIG, overwrite=True)
    after = loader_module.P3SLoaderNode.fingerprint_inputs(model_name="rex.safetensors")
    assert before != after
    assert loader_module.P3SLoaderNode.fingerprint_inputs(model_name="gone.safetensors") == "gone.safetensors"


def test_the_info_output_is_bounded_however_large_the_files_metadata(comfy_tmp_dirs, loader_module):
    folder = _model_folder(comfy_tmp_dirs)
    loader_module.P3SLoaderNode.GET_SCHEMA()  # registers the p3s folder, as ComfyUI's loading does
    training = {"prompts": ["a photo of sks dog " * 2000] * 500, "lr": 1e-5}  # about 19 MB of text
    save_p3s_model(os.path.join(folder, "wordy.safetensors"), {"w": torch.ones(3)}, CONFIG, training)
    with pytest.raises(pack_core(loader_module).errors.P3SInputError, match="header of"):
        loader_module.P3SLoaderNode.execute("wordy.safetensors")
    training = {"prompts": ["a photo of sks dog " * 300] * 100, "lr": 1e-5}  # 570 kB: under the header limit
    save_p3s_model(os.path.join(folder, "chatty.safetensors"), {"w": torch.ones(3)}, CONFIG, training)
    info = json.loads(loader_module.P3SLoaderNode.execute("chatty.safetensors").result[1])
    assert len(json.dumps(info)) < 30_000
    assert info["training"]["lr"] == 1e-5
    assert info["training"]["prompts"][0].endswith("(5700 characters)")
    assert info["training"]["prompts"][-1] == "... 36 more items"


def test_loader_reads_a_file_of_either_base_and_refuses_an_unknown_one(comfy_tmp_dirs, loader_module):
    from safetensors.torch import save_file

    folder = _model_folder(comfy_tmp_dirs)
    save_p3s_model(os.path.join(folder, "xl.safetensors"), {"w": torch.ones(3)}, CONFIG, base="sdxl")
    loader_module.P3SLoaderNode.GET_SCHEMA()
    model, info_text = loader_module.P3SLoaderNode.execute(model_name="xl.safetensors").args
    assert model.info.base == "sdxl" and json.loads(info_text)["base"] == "sdxl"
    meta = {"p3s.format": "p3s-model", "p3s.format_version": "2", "p3s.base": "sd3", "p3s.dtype": "fp32"}
    save_file({"w": torch.ones(2)}, os.path.join(folder, "sd3.safetensors"), metadata={**meta, "p3s.config": "{}"})
    with pytest.raises(pack_core(loader_module).errors.P3SInputError, match=r"'sd3'; this pack supports sd15, sdxl"):
        loader_module.P3SLoaderNode.execute(model_name="sd3.safetensors")
