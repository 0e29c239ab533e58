"""Subject selection inside the real ComfyUI server, through its HTTP API."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from devtools.api_client import ComfyClient
from devtools.sample_scene import LEFT_CENTRE, RIGHT_CENTRE, disc_mask, twin_points_json
from devtools.workflows import selection_workflow

from .conftest import CLIP_NAME, SCENE_NAME

pytestmark = pytest.mark.host


def load_output(client: ComfyClient, record: dict[str, str]) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(client.view(record))).convert("RGB")).astype(np.float32) / 255.0


def test_object_info_lists_the_nodes_with_their_inputs(client: ComfyClient):
    info = client.object_info()
    points = info["P3SPoints"]
    assert points["category"] == "P3S/select" and points["display_name"] == "P3S Points"
    assert points["output"] == ["P3S_POINTS", "IMAGE"]
    mask = info["P3SRngrMask"]
    required = mask["input"]["required"]
    assert required["points"][0] == "P3S_POINTS" and required["clip_vision"][0] == "CLIP_VISION"
    assert required["images"][0] == "IMAGE"
    assert {"layer", "sigma", "dilation"} <= set(required)
    assert mask["output"] == ["MASK", "MASK", "IMAGE"]
    inpaint = info["P3SInpaint"]
    method = inpaint["input"]["required"]["method"]
    assert method[0] == "COMBO" and method[1]["options"] == ["telea", "navier_stokes", "fill_outside"]
    assert all(
        info[n]["input"]["required"][k][1].get("tooltip")
        for n, k in [("P3SRngrMask", "sigma"), ("P3SInpaint", "method"), ("P3SPoints", "points")]
    )


def test_selection_workflow_masks_the_picked_twin_and_erases_the_other(client: ComfyClient):
    result = client.run(selection_workflow(SCENE_NAME, twin_points_json(), CLIP_NAME, prefix="sel"))
    assert result.succeeded, result.error
    subject = load_output(client, result.output_images("8")[0])[..., 0] > 0.5
    negative = load_output(client, result.output_images("11")[0])[..., 0] > 0.5
    left, right = disc_mask(LEFT_CENTRE), disc_mask(RIGHT_CENTRE)
    assert subject[left].mean() > 0.95 and not subject[right].any()
    assert negative[right].mean() > 0.95 and not negative[left].any()
    clean = load_output(client, result.output_images("6")[0])
    red = clean[..., 0] - clean[..., 1]
    assert red[left].mean() > 0.6, "the selected twin stays"
    assert red[right].mean() < 0.1, "the look-alike is inpainted away"
    heatmap = load_output(client, result.output_images("12")[0])
    assert heatmap.shape == clean.shape


def test_a_batch_takes_one_point_set_per_image(client: ComfyClient):
    pts = json.loads(twin_points_json())["images"][0]
    swapped = {"positive": pts["negative"], "negative": pts["positive"]}
    points = json.dumps({"version": 1, "images": [pts, swapped]})
    result = client.run(selection_workflow(SCENE_NAME, points, CLIP_NAME, prefix="batch", batch=2))
    assert result.succeeded, result.error
    records = result.output_images("8")
    assert len(records) == 2
    first, second = (load_output(client, r)[..., 0] > 0.5 for r in records)
    left, right = disc_mask(LEFT_CENTRE), disc_mask(RIGHT_CENTRE)
    assert first[left].mean() > 0.95 and not first[right].any()
    assert second[right].mean() > 0.95 and not second[left].any()


@pytest.mark.parametrize(
    ("points", "batch", "message"),
    [
        ('{"images": [{"positive": [], "negative": [[0.5, 0.5]]}]}', 1, "No positive point on image 1"),
        ('{"images": [{"positive": [[1.4, 0.5]]}]}', 1, "outside the image"),
        ('{"images": [{"positive": [[0.5, 0.5]]', 1, "not valid JSON"),
        ('{"images": [{"positive": [[0.25, 0.5]]}]}', 2, "2 reference images but only 1 point set"),
        ('{"images": [{"positive": [[0.25, 0.5]], "negative": [[0.25, 0.5]]}]}', 1, "empty after Otsu"),
    ],
    ids=["no-positive", "outside", "malformed", "too-few-sets", "empty-mask"],
)
def test_bad_input_fails_with_a_clear_node_error(client: ComfyClient, points: str, batch: int, message: str):
    result = client.run(selection_workflow(SCENE_NAME, points, CLIP_NAME, prefix="bad", batch=batch))
    assert not result.succeeded
    error = result.error
    assert error is not None and message in error["exception_message"]
    assert error["node_type"] in {"P3SPoints", "P3SRngrMask"}
