"""``P3S Subject Score`` in-process on the tiny backbones: schema, folder, outputs, errors."""

import json
import math
import os
import shutil

import pytest
import torch

from devtools.pack_modules import import_pack_module, pack_core


@pytest.fixture(scope="module")
def node_module():
    return import_pack_module("nodes.subject_score_node")


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    from devtools.launch_comfyui import declare_torchvision_ops

    declare_torchvision_ops()
    from devtools.tiny_eval_models import write_tiny_eval_set

    return write_tiny_eval_set(tmp_path_factory.mktemp("tiny_eval"))


@pytest.fixture
def eval_folder(comfy_tmp_dirs, tiny_set):
    """models/p3s_eval holding the tiny single files under the protocol's names."""
    folder = os.path.join(comfy_tmp_dirs["models"], "p3s_eval")
    os.makedirs(folder)
    for key in ("clip_file", "dino_file"):
        shutil.copy(tiny_set[key], folder)
    return folder


class FakeClipVision:
    """ComfyUI's CLIP vision interface: ``encode_image`` gives ``image_embeds`` (here the mean colour)."""

    def encode_image(self, image):
        return {"image_embeds": image.mean(dim=(1, 2))}


def _run(node_module, images, references, **extra):
    inputs = {
        "prompts": "a photo of sks dog",
        "identifier": "sks",
        "clip_model": "clip-vit-base-patch32.safetensors",
        "dino_model": "dino-vits16.safetensors",
        **extra,
    }
    return node_module.P3SSubjectScore.execute(images=images, references=references, **inputs)


def test_schema_category_tooltips_and_the_folder_listing(node_module, eval_folder):
    import folder_paths

    node = node_module.P3SSubjectScore
    schema = node.GET_SCHEMA()
    assert schema.node_id == "P3SSubjectScore" and schema.category == "P3S/inspect"
    assert folder_paths.folder_names_and_paths["p3s_eval"][1] == {".safetensors", ".bin"}
    inputs = node.INPUT_TYPES()
    every = {**inputs["required"], **inputs["optional"]}
    assert set(inputs["optional"]) == {"reference_masks", "clip_vision"}
    assert all(options.get("tooltip") for _, options in every.values())
    assert every["clip_model"][1]["options"][0] == "clip-vit-base-patch32.safetensors"
    assert "dino-vits16.safetensors" in every["clip_model"][1]["options"]  # the folder's files are listed
    assert [o.io_type for o in schema.outputs] == ["FLOAT"] * 4 + ["STRING", "STRING", "IMAGE"]
    hints = node_module.download_hints()
    assert {h["name"] for h in hints} == {"clip-vit-base-patch32.safetensors", "dino-vits16.safetensors"}
    assert all(h["directory"] == "p3s_eval" and h["url"].startswith("https://huggingface.co/") for h in hints)
    assert all(h["url"].endswith(".safetensors") for h in hints)  # the frontend downloads only these


def test_scores_table_per_image_json_and_chart(node_module, eval_folder):
    references = torch.rand(2, 64, 80, 3, generator=torch.Generator().manual_seed(0))
    images = torch.cat([references[:1], torch.rand(1, 64, 80, 3)])
    out = _run(node_module, images, references, clip_vision=FakeClipVision())
    clip_i, clip_t, dino, clip_i_comfy, table, per_image, chart = out.args
    rows = json.loads(per_image)
    assert [r["prompt"] for r in rows] == ["a photo of dog"] * 2
    assert clip_i == pytest.approx((rows[0]["clip_i"] + rows[1]["clip_i"]) / 2)
    assert dino == pytest.approx((rows[0]["dino"] + rows[1]["dino"]) / 2) and -1 <= clip_t <= 1
    colours = torch.cat([images, references]).mean(dim=(1, 2)).double()
    unit = colours / colours.norm(dim=1, keepdim=True)
    expected = (unit[:2] @ unit[2:].T).mean(dim=1).mean()
    assert clip_i_comfy == pytest.approx(float(expected))
    assert "CLIP-I*" in table and "not the protocol's backbone" in table
    assert chart.ndim == 4 and chart.shape[0] == 1 and chart.shape[-1] == 3
    assert out.ui.as_dict()["images"][0]["type"] == "temp"


def test_without_clip_vision_the_extra_score_is_nan(node_module, eval_folder):
    out = _run(node_module, torch.rand(1, 32, 32, 3), torch.rand(1, 32, 32, 3))
    assert math.isnan(out.args[3]) and "CLIP-I*" not in out.args[4]


def test_a_missing_backbone_names_the_folder_and_download_before_loading(node_module, comfy_tmp_dirs):
    errors = pack_core(node_module).errors
    with pytest.raises(errors.P3SInputError) as error:
        _run(node_module, torch.rand(1, 32, 32, 3), torch.rand(1, 32, 32, 3))
    message = str(error.value)
    assert "models/p3s_eval" in message and "clip-vit-base-patch32.safetensors" in message
    assert "huggingface.co/openai/clip-vit-base-patch32" in message


def test_bad_prompts_are_refused_before_any_model_loads(node_module, comfy_tmp_dirs, monkeypatch):
    errors = pack_core(node_module).errors
    monkeypatch.setattr(node_module, "load_clip", lambda *a: pytest.fail("loaded before checking"))
    with pytest.raises(errors.P3SInputError, match="3 prompts for 2 images"):
        _run(node_module, torch.rand(2, 32, 32, 3), torch.rand(1, 32, 32, 3), prompts="a\nb\nc")
