"""Memory returns to its baseline in the real server: a P3S Fine-tune interrupted mid-step, then a
whole pipeline with P3S Apply, then ``POST /free``, leave no more tensor bytes alive than the same
pipeline and ``/free`` left before.

The count is exact: a test-only node (``devtools/memory_probe``, linked into the test server)
sums the storages of every tensor the server's garbage collector can reach. Measured: 4439 MB
alive at the end of the pipeline, 0 after ``/free``, before and after the cancelled run; with the
cancelled run's P3S model kept by mistake, 16.5 MB after (the scope-injection model of the
full-size stand-in, the smallest thing a leak would keep). The margin is 1 MB.
"""

from __future__ import annotations

import time

import pytest

from devtools.api_client import ComfyClient
from devtools.comfy_host import ComfyServer
from devtools.sample_scene import twin_points_json
from devtools.workflows import SMALL_PIPELINE, finetune_workflow, full_pipeline_workflow

from .conftest import CHECKPOINT_NAME, CLIP_NAME, SCENE_NAME

pytestmark = pytest.mark.host

MARGIN_BYTES = 2**20
FINETUNE_NODE = "21"  # devtools.workflows.finetune_workflow's P3S Fine-tune
PROBE = "999"


def tensor_bytes(client: ComfyClient, label: str, prompt: dict | None = None, after: str | None = None) -> int:
    """The probe's count of the tensor bytes alive in the server, alone or at the end of ``prompt``
    (run after node ``after``'s image, while the prompt's models are held)."""
    prompt = dict(prompt or {})
    prompt[PROBE] = {"class_type": "DevtoolsTensorBytes", "inputs": {"label": label}}
    if after is not None:
        prompt[PROBE]["inputs"]["after"] = [after, 0]
    result = client.run(prompt)
    assert result.succeeded, result.error
    return int(result.history["outputs"][PROBE]["tensor_bytes"][0])


def tensor_bytes_after_free(client: ComfyClient, label: str) -> int:
    """``POST /free`` (unload models, drop caches), then the probe's count of live tensor bytes."""
    client.post_json("/free", {"unload_models": True, "free_memory": True})
    time.sleep(2.0)  # the worker wakes on the flag and frees before the probe is queued
    return tensor_bytes(client, label)


def pipeline() -> dict:
    return full_pipeline_workflow(
        SCENE_NAME, CLIP_NAME, CHECKPOINT_NAME, save_name="", prefix="p3s_memory", **SMALL_PIPELINE
    )


def test_memory_is_back_to_its_baseline_after_a_cancelled_finetune_an_apply_run_and_free(
    comfy_server: ComfyServer, client: ComfyClient
):
    prompt = pipeline()
    decoded = next(i for i, node in prompt.items() if node["class_type"] == "VAEDecode")
    loaded = tensor_bytes(client, "loaded", prompt, after=decoded)
    assert loaded > 500 * 2**20, "the probe sees the cached SD1.5 weights (about 2 GB) before /free"
    baseline = tensor_bytes_after_free(client, "baseline")

    interrupted = finetune_workflow(
        CHECKPOINT_NAME, CLIP_NAME, SCENE_NAME, twin_points_json(), "", epochs=1000, prefix="p3s_memory_cancel"
    )
    with client.events() as events:
        prompt_id = client.queue(interrupted)
        events.wait_for("progress", timeout=600, prompt_id=prompt_id, node=FINETUNE_NODE)
        client.interrupt()
    assert client.wait(prompt_id, timeout=300).interrupted
    again = client.run(pipeline())
    assert again.succeeded, again.error
    after = tensor_bytes_after_free(client, "after")
    shown = f"loaded {loaded / 2**20:.0f} MB, after /free {baseline / 2**20:.1f} MB, at the end {after / 2**20:.1f} MB"
    print(f"live tensor bytes: {shown}")
    assert after - baseline <= MARGIN_BYTES, f"{(after - baseline) / 2**20:.1f} MB more tensors alive ({shown})"
