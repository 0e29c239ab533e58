"""A real ComfyUI server with the pack, the stand-in CLIP vision model and the sample scene."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.api_client import ComfyClient
from devtools.comfy_host import ComfyServer, running_server
from devtools.sample_scene import write_twin_scene
from devtools.standin_models import write_clip_vision_standin, write_sd15_checkpoint_standin

CLIP_NAME = "p3s_standin_vit_l14.safetensors"
CHECKPOINT_NAME = "p3s_standin_sd15.safetensors"
SCENE_NAME = "p3s_twins.png"
MODEL_CACHE = Path(os.environ.get("P3S_TEST_MODEL_CACHE", Path(__file__).resolve().parents[2] / ".host" / "models"))


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyServer]:
    base = tmp_path_factory.mktemp("comfy_base")
    clip = write_clip_vision_standin(MODEL_CACHE / "clip_vision" / CLIP_NAME)
    (base / "models" / "clip_vision").mkdir(parents=True)
    (base / "models" / "clip_vision" / CLIP_NAME).symlink_to(clip)
    checkpoint = write_sd15_checkpoint_standin(MODEL_CACHE / "checkpoints" / CHECKPOINT_NAME)  # ~1 min once
    (base / "models" / "checkpoints").mkdir(parents=True)
    (base / "models" / "checkpoints" / CHECKPOINT_NAME).symlink_to(checkpoint)
    write_twin_scene(base / "input" / SCENE_NAME)
    with running_server(base) as server:
        yield server


@pytest.fixture(scope="session")
def client(comfy_server: ComfyServer) -> ComfyClient:
    return ComfyClient(comfy_server.url)
