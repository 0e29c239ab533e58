"""SDXL through POST /prompt on the real server, with a checkpoint ComfyUI itself detects as SDXL.

The stand-in (devtools/standin_models.py) has SDXL 1.0's 70 transformer blocks, its 2048-wide
context, its ADM input and its real CLIP ViT-L and bigG text encoders, at a tenth of its U-Net's
size (the deeper levels are 320 wide; ComfyUI's detection does not read their widths). The
shipped p3s_sdxl_full_pipeline example runs with only its CPU-cost settings lowered; its P3S file
says it was made for SDXL, and that file is refused on the SD1.5 checkpoint with both bases named.
"""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from devtools.api_client import ComfyClient
from devtools.comfy_host import ComfyServer
from devtools.export_examples import SDXL_SAVE_NAME
from devtools.model_files import CHECKPOINT, SDXL_CHECKPOINT, link_standins
from devtools.workflows import SMALL_PIPELINE, example_api, with_settings
from p3s_core.model.model_file import KEY_BASE, KEY_TRAINING

pytestmark = pytest.mark.host

EXAMPLE = "p3s_sdxl_full_pipeline"


@pytest.fixture(scope="module")
def sdxl_model_file(comfy_server: ComfyServer):
    """The SDXL stand-in linked into the server's checkpoints (written once, 2.4 GB); the P3S file the
    example saves, removed afterwards (the test keeps no copy)."""
    link_standins(comfy_server.base_dir, sdxl=True)
    path = comfy_server.base_dir / "models" / "p3s" / SDXL_SAVE_NAME
    yield path
    path.unlink(missing_ok=True)


def test_the_sdxl_example_runs_as_shipped_on_a_checkpoint_comfyui_detects_as_sdxl(client: ComfyClient, sdxl_model_file):
    prompt = with_settings(example_api(EXAMPLE), **SMALL_PIPELINE)
    assert prompt["10"]["inputs"]["ckpt_name"] == SDXL_CHECKPOINT
    result = client.run(prompt, timeout=1800)
    assert result.succeeded, result.error
    saved = [i for i, node in prompt.items() if node["class_type"] == "SaveImage"]
    assert all(result.output_images(i) for i in saved), "every Save Image of the example wrote an image"
    with safe_open(str(sdxl_model_file), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata[KEY_BASE] == "sdxl"
    training = json.loads(metadata[KEY_TRAINING])
    assert (training["epochs"], training["scope"]) == (SMALL_PIPELINE["epochs"], SMALL_PIPELINE["scope"])


def test_the_sdxl_p3s_file_is_refused_on_the_sd15_checkpoint_naming_both(client: ComfyClient, sdxl_model_file):
    if not sdxl_model_file.exists():
        pytest.skip("needs the file the SDXL example saves (the test above)")
    prompt = with_settings(example_api("p3s_generate_with_model"), **SMALL_PIPELINE)
    assert prompt["10"]["inputs"]["ckpt_name"] == CHECKPOINT
    prompt["11"]["inputs"]["model_name"] = SDXL_SAVE_NAME
    result = client.run(prompt, timeout=600)
    assert not result.succeeded
    message = json.dumps(result.error)
    assert "SDXL" in message and "SD1.5" in message, message
