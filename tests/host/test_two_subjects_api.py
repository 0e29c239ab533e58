"""Two subjects through POST /prompt on the real server: the shipped p3s_two_subjects example runs
(small settings) with both models trained first (the full pipeline's training part only), and the
widget-free API path takes a region from Load Image's MASK with ``region_feather`` left out of the
prompt.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from devtools.api_client import ComfyClient
from devtools.example_thumbnails import train_second_subject
from devtools.workflows import SMALL_PIPELINE, example_api, training_only, with_settings

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def two_models(client: ComfyClient):
    first = client.run(training_only(with_settings(example_api("p3s_full_pipeline"), **SMALL_PIPELINE)), timeout=1800)
    assert first.succeeded, first.error
    train_second_subject(client)


def _run(client: ComfyClient, prompt: dict) -> None:
    result = client.run(prompt, timeout=1800)
    assert result.succeeded, result.error
    assert result.output_images("19"), "the two-subject image is saved"


def test_the_two_subjects_example_runs_as_shipped(client: ComfyClient, two_models):
    _run(client, with_settings(example_api("p3s_two_subjects"), **SMALL_PIPELINE))


def test_a_region_from_a_load_image_mask_without_the_feather_input(client: ComfyClient, two_models, tmp_path):
    rgba = np.full((SMALL_PIPELINE["size"], SMALL_PIPELINE["size"], 4), 255, dtype=np.uint8)
    rgba[:, : SMALL_PIPELINE["size"] // 2, 3] = 0  # Load Image's MASK is 1 - alpha: the left half
    Image.fromarray(rgba, "RGBA").save(tmp_path / "p3s_left_region.png")
    name = client.upload_image(tmp_path / "p3s_left_region.png")
    prompt = with_settings(example_api("p3s_two_subjects"), **SMALL_PIPELINE)
    prompt["41"] = {"class_type": "LoadImage", "inputs": {"image": name}}
    prompt["13"]["inputs"]["region"] = ["41", 1]
    del prompt["13"]["inputs"]["region_feather"]  # an API client that leaves the optional input out
    _run(client, prompt)
