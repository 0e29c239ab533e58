"""The P3S Points node through ComfyUI's HTTP API (no browser): KJNodes inputs, errors, batches."""

from __future__ import annotations

import json

import numpy as np
import pytest
from host_helpers import (
    IMAGE_H,
    IMAGE_NAME,
    IMAGE_W,
    fetch_image,
    http_json,
    make_reference_image,
    wait_for_history,
)

from p3s_core.inspection.preview import NEGATIVE_RGB, POSITIVE_RGB

P3S_JSON = json.dumps({"version": 1, "images": [{"positive": [[0.5, 0.5]], "negative": []}]})


def run(server, prompt: dict) -> dict:
    prompt_id = http_json(server, "/prompt", {"prompt": prompt, "client_id": "p3s-api-test"})["prompt_id"]
    return wait_for_history(server, prompt_id)


def points_prompt(**inputs) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": IMAGE_NAME}},
        "2": {"class_type": "P3SPoints", "inputs": {"points": P3S_JSON, **inputs}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 1]}},
    }


@pytest.fixture(scope="module")
def server(comfy_server):
    make_reference_image(comfy_server.base_dir / "input" / IMAGE_NAME)
    return comfy_server


@pytest.mark.host
def test_kj_pixel_coordinates_replace_image_one_points_in_the_preview(server):
    entry = run(
        server,
        points_prompt(
            image=["1", 0],
            kj_positive=json.dumps([{"x": 480, "y": 600}]),
            kj_negative=json.dumps([{"x": 1200, "y": 350}]),
        ),
    )
    assert entry["status"]["status_str"] == "success", entry["status"]
    preview = fetch_image(server, entry["outputs"]["3"]["images"][0])
    assert preview.shape == (IMAGE_H, IMAGE_W, 3)
    assert np.allclose(preview[600, 480] / 255.0, POSITIVE_RGB, atol=0.03)
    assert np.allclose(preview[350, 1200] / 255.0, NEGATIVE_RGB, atol=0.03)
    # The widget's own point (image centre) was replaced, so the centre keeps the image's colour.
    assert not np.allclose(preview[IMAGE_H // 2, IMAGE_W // 2] / 255.0, POSITIVE_RGB, atol=0.1)


@pytest.mark.host
def test_kj_coordinates_without_an_image_fail_with_a_clear_message(server):
    entry = run(server, points_prompt(kj_positive=json.dumps([{"x": 10, "y": 10}])))
    assert entry["status"]["status_str"] == "error"
    messages = json.dumps(entry["status"]["messages"])
    assert "connect the image they were picked on" in messages


@pytest.mark.host
def test_without_image_the_preview_is_a_grey_square_with_the_points(server):
    entry = run(server, points_prompt())
    assert entry["status"]["status_str"] == "success", entry["status"]
    preview = fetch_image(server, entry["outputs"]["3"]["images"][0])
    assert preview.shape == (512, 512, 3)
    assert np.allclose(preview[256, 256] / 255.0, POSITIVE_RGB, atol=0.03)
    assert np.allclose(preview[20, 20] / 255.0, 0.5, atol=0.01)
    assert "p3s_images" not in entry["outputs"].get("2", {})


@pytest.mark.host
def test_a_batch_needs_one_point_set_per_image(server):
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": IMAGE_NAME}},
        "4": {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": 2}},
        "2": {"class_type": "P3SPoints", "inputs": {"points": P3S_JSON, "image": ["4", 0]}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 1]}},
    }
    entry = run(server, prompt)
    assert entry["status"]["status_str"] == "error"
    assert "2 reference images but only 1 point set" in json.dumps(entry["status"]["messages"])

    two_sets = {"version": 1, "images": [{"positive": [[0.25, 0.5]]}, {"positive": [[0.75, 0.5]]}]}
    prompt["2"]["inputs"]["points"] = json.dumps(two_sets)
    entry = run(server, prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    first, second = (fetch_image(server, ref) for ref in entry["outputs"]["3"]["images"])
    assert np.allclose(first[600, 400] / 255.0, POSITIVE_RGB, atol=0.03)
    assert np.allclose(second[600, 1200] / 255.0, POSITIVE_RGB, atol=0.03)
    assert not np.allclose(first[600, 1200] / 255.0, POSITIVE_RGB, atol=0.1)
    assert len(entry["outputs"]["2"]["p3s_images"]) == 2
