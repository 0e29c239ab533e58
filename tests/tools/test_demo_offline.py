"""The demo's model choice and its workflow, without a server or model weights."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from devtools.demo import pick_model
from devtools.standin_models import STANDIN_KEY
from devtools.workflows import FULL_PIPELINE_API, SMALL_PIPELINE, full_pipeline_workflow


def counting_writer(calls: list[Path]):
    """Writes a tiny safetensors file marked as a stand-in, as the real writers mark theirs."""

    def write(path: Path) -> Path:
        calls.append(path)
        save_file({"x": torch.zeros(1)}, str(path), metadata={STANDIN_KEY: "test"})
        return path

    return write


def test_the_stand_in_is_written_once_under_the_real_name_and_only_when_no_model_is_there(tmp_path: Path):
    calls: list[Path] = []
    folder = tmp_path / "checkpoints"
    assert pick_model(folder, "real.safetensors", counting_writer(calls)) == ("real.safetensors", True)
    assert pick_model(folder, "real.safetensors", counting_writer(calls)) == ("real.safetensors", True)
    assert calls == [folder / "real.safetensors"], "written on the first run only"


def test_a_real_model_beats_a_stand_in_and_the_expected_name_beats_others(tmp_path: Path):
    calls: list[Path] = []
    folder = tmp_path / "clip_vision"
    folder.mkdir()
    counting_writer([])(folder / "a_old_standin.safetensors")  # a stand-in under another name is no real model
    (folder / "b_other.safetensors").write_bytes(b"")
    (folder / "notes.txt").write_text("not a model")
    assert pick_model(folder, "real.safetensors", counting_writer(calls)) == ("b_other.safetensors", False)
    (folder / "real.safetensors").write_bytes(b"")
    assert pick_model(folder, "real.safetensors", counting_writer(calls)) == ("real.safetensors", False)
    assert calls == []


def test_the_demo_workflow_is_the_example_with_only_the_overridden_inputs_changed():
    twin = json.loads(FULL_PIPELINE_API.read_text())
    prompt = full_pipeline_workflow(
        "scene.png", "clip.safetensors", "sd.safetensors", save_name="d/s.safetensors", prefix="demo", **SMALL_PIPELINE
    )
    changed = {
        (node_id, name, value)
        for node_id, node in prompt.items()
        for name, value in node["inputs"].items()
        if twin[node_id]["inputs"][name] != value
    }
    by_class = {(prompt[node_id]["class_type"], name, str(value)) for node_id, name, value in changed}
    assert {(c, n, v) for c, n, v in by_class if c != "SaveImage"} == {
        ("LoadImage", "image", "scene.png"),
        ("CLIPVisionLoader", "clip_name", "clip.safetensors"),
        ("CheckpointLoaderSimple", "ckpt_name", "sd.safetensors"),
        ("P3SFineTune", "epochs", str(SMALL_PIPELINE["epochs"])),
        ("P3SFineTune", "resolution", str(SMALL_PIPELINE["resolution"])),
        ("P3SFineTune", "scope", SMALL_PIPELINE["scope"]),
        ("P3SFineTune", "save_name", "d/s.safetensors"),
        ("EmptyLatentImage", "width", str(SMALL_PIPELINE["size"])),
        ("EmptyLatentImage", "height", str(SMALL_PIPELINE["size"])),
        ("KSampler", "steps", str(SMALL_PIPELINE["steps"])),
        ("P3SSchedule", "steps", str(SMALL_PIPELINE["steps"])),
    }
    saves = [node for node in prompt.values() if node["class_type"] == "SaveImage"]
    assert saves and all(node["inputs"]["filename_prefix"].startswith("demo/") for node in saves)
    assert {k: v["class_type"] for k, v in prompt.items()} == {k: v["class_type"] for k, v in twin.items()}
