"""A real ComfyUI server with the pack and the stand-in models under the standard file names.

The sample scene is in the input folder because the pack puts its example inputs there when it
loads (nodes/example_inputs.py), as a user's ComfyUI gets them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.api_client import ComfyClient
from devtools.comfy_host import ComfyServer, running_server
from devtools.model_files import (
    CHECKPOINT,
    CLIP_VISION,
    MODEL_CACHE,
    link_batch_probe,
    link_memory_probe,
    link_standins,
)

CLIP_NAME = CLIP_VISION
CHECKPOINT_NAME = CHECKPOINT
SCENE_NAME = "p3s_twins.png"
__all__ = ["CHECKPOINT_NAME", "CLIP_NAME", "MODEL_CACHE", "SCENE_NAME"]


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyServer]:
    base = tmp_path_factory.mktemp("comfy_base")
    link_standins(base)  # the SD1.5 stand-in takes ~1 min once
    link_memory_probe(base)  # a test-only node that counts live tensor bytes (test_memory_api)
    link_batch_probe(base)  # a test-only slow image node (test_batch_faults)
    with running_server(base) as server:
        yield server


@pytest.fixture(scope="session")
def client(comfy_server: ComfyServer) -> ComfyClient:
    return ComfyClient(comfy_server.url)
