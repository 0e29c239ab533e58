"""The examples' input images ship with the pack and reach ComfyUI's input folder when it loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from devtools.pack_modules import REPO_ROOT, import_pack_module
from devtools.sample_scene import twin_scene

EXAMPLES = REPO_ROOT / "example_workflows"


def test_the_shipped_image_is_the_sample_scene_the_example_points_were_set_on():
    shipped = np.asarray(Image.open(EXAMPLES / "input" / "p3s_twins.png").convert("RGB"))
    assert (shipped == twin_scene()).all()


def test_every_image_an_example_loads_is_shipped():
    for path in EXAMPLES.glob("api/*.api.json"):
        for node in json.loads(path.read_text()).values():
            if node["class_type"] == "LoadImage":
                assert (EXAMPLES / "input" / node["inputs"]["image"]).is_file(), path.name


def test_missing_inputs_are_copied_and_existing_files_are_kept(tmp_path: Path):
    module = import_pack_module("nodes.example_inputs")
    (tmp_path / "p3s_twins.png").write_bytes(b"the user's own file")
    assert module.install_example_inputs(tmp_path) == []
    assert (tmp_path / "p3s_twins.png").read_bytes() == b"the user's own file", "never replaced"
    fresh = tmp_path / "fresh"
    assert module.install_example_inputs(fresh) == [fresh / "p3s_twins.png"]
    assert (fresh / "p3s_twins.png").read_bytes() == (EXAMPLES / "input" / "p3s_twins.png").read_bytes()
    assert sorted(p.name for p in fresh.iterdir()) == ["p3s_twins.png"], "no partial file left"
