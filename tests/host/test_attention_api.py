"""P3S Attention Maps and Overlays inside the real ComfyUI server, on a random full-size SD1.5
checkpoint (SD1.5 detection needs the real shapes) with an untrained P3S model applied."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from devtools.api_client import ComfyClient
from devtools.workflows import attention_workflow

from .conftest import CHECKPOINT_NAME, CLIP_NAME, SCENE_NAME

pytestmark = pytest.mark.host


def load_output(client: ComfyClient, record: dict[str, str]) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(client.view(record))).convert("RGB")).astype(np.float32) / 255.0


def test_attention_workflow_writes_overlays_and_the_lac_plot(client: ComfyClient):
    info = client.object_info()
    maps = info["P3SAttentionMaps"]
    assert maps["category"] == "P3S/inspect" and maps["output"] == ["MODEL", "P3S_ATTENTION"]
    assert maps["input"]["required"]["layer"][1]["default"] == "output_11"
    assert info["P3SAttentionOverlays"]["output"] == ["IMAGE"] * 4

    result = client.run(attention_workflow(CHECKPOINT_NAME, CLIP_NAME, SCENE_NAME, prefix="attn"), timeout=900)
    assert result.succeeded, result.error
    image = load_output(client, result.output_images("24")[0])
    overlays = {node: [load_output(client, r) for r in result.output_images(node)] for node in ("20", "21", "22")}
    for node, images in overlays.items():
        assert len(images) == 2, f"node {node}: one overlay per word (sks, dog)"
        assert all(o.shape == image.shape for o in images)
        assert not np.allclose(images[0], image, atol=2 / 255), "the overlay shows a map over the image"
    # Untrained P3S: the copy sees the same input as the frozen U-Net, so it attends the same way.
    # (Up to float noise: the copy runs on the cond rows alone, the frozen U-Net on cond + uncond.)
    assert np.abs(overlays["20"][0] - overlays["21"][0]).mean() < 0.5 / 255
    plot = load_output(client, result.output_images("23")[0])
    assert plot.shape == (320, 512, 3) and (plot < 0.5).any()


def test_a_word_missing_from_the_prompt_is_a_clear_error(client: ComfyClient):
    workflow = attention_workflow(CHECKPOINT_NAME, CLIP_NAME, SCENE_NAME, words="cat", prefix="attn_bad")
    result = client.run(workflow, timeout=900)
    assert not result.succeeded
    assert "'cat' not found in the prompt" in result.error["exception_message"]
    assert result.error["node_type"] == "P3SAttentionMaps"
