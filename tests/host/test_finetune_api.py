"""P3S Fine-tune inside the real ComfyUI server, queued through POST /prompt, on the random
full-size SD1.5 checkpoint: it trains to the end and saves a loadable model into models/p3s;
POST /interrupt during training stops it, writes nothing and leaves the server working."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from devtools.api_client import ComfyClient
from devtools.comfy_host import ComfyServer
from devtools.sample_scene import twin_points_json
from devtools.workflows import finetune_workflow, selection_workflow
from p3s_core.model.model_file import load_p3s_model

from .conftest import CHECKPOINT_NAME, CLIP_NAME, SCENE_NAME

pytestmark = pytest.mark.host

FINETUNE_NODE = "21"  # node ids of devtools.workflows.finetune_workflow
LOSS_PLOT_NODE = "22"


def p3s_folder(server: ComfyServer) -> Path:
    return server.base_dir / "models" / "p3s"


def leftovers(server: ComfyServer) -> list[Path]:
    """Temporary files of unfinished writes in the p3s folder."""
    folder = p3s_folder(server)
    return [p for p in folder.rglob("*") if ".partial" in p.name] if folder.exists() else []


def test_finetune_trains_and_saves_a_loadable_model(comfy_server: ComfyServer, client: ComfyClient):
    name = "trained/sks_disc.safetensors"
    workflow = finetune_workflow(CHECKPOINT_NAME, CLIP_NAME, SCENE_NAME, twin_points_json(), name, epochs=2, seed=7)
    result = client.run(workflow, timeout=900)
    assert result.succeeded, result.error

    path = p3s_folder(comfy_server) / name
    tensors, info = load_p3s_model(path)
    assert info.base == "sd15" and len(info.config["sites"]) == 16
    training = info.training
    assert (training["epochs"], training["scope"], training["seed"], training["images"]) == (2, "injection", 7, 1)
    assert training["prompts"] == ["a photo of sks disc"]
    assert math.isfinite(training["final_loss"]) and training["final_loss"] > 0
    injection = [v for k, v in tensors.items() if k.startswith("injection.")]
    assert len(injection) == 16 * 2 * 3, "down, up and up bias of attn1 and attn2 per block (rank 64)"
    assert info.config["injection_rank"] == 64
    assert any(v.any() for v in injection), "the zero layers learned"
    # Scope "injection" (format 2): the copy is the base U-Net itself, so the file holds no copy,
    # and it names the base it was trained on.
    assert not [k for k in tensors if k.startswith("copy.")], "an injection-scope file stores no U-Net copy"
    assert info.scope == "injection" and len(info.base_fingerprint) == 16
    assert path.stat().st_size < 10 * 2**20, "the rank-64 injection layers, hint conv and encoder only"
    assert name in client.get_json("/models/p3s"), "P3S Loader lists the new file"
    assert not leftovers(comfy_server)

    plot = Image.open(io.BytesIO(client.view(result.output_images(LOSS_PLOT_NODE)[0])))
    pixels = np.asarray(plot.convert("RGB"))
    assert pixels.shape == (320, 512, 3) and pixels.min() < 128 < pixels.max()
    path.unlink()


def test_interrupt_during_training_stops_it_and_writes_nothing(comfy_server: ComfyServer, client: ComfyClient):
    name = "interrupted.safetensors"
    epochs = 1000
    workflow = finetune_workflow(
        CHECKPOINT_NAME, CLIP_NAME, SCENE_NAME, twin_points_json(), name, epochs=epochs, prefix="p3s_interrupted"
    )
    with client.events() as events:
        prompt_id = client.queue(workflow)
        progress = events.wait_for("progress", timeout=600, prompt_id=prompt_id, node=FINETUNE_NODE)
        shown = events.wait_for("progress_text", timeout=60, node=FINETUNE_NODE)
        client.interrupt()
    assert progress["data"]["max"] == epochs and 1 <= progress["data"]["value"] < epochs
    assert shown["data"]["text"].startswith(f"injection: step {progress['data']['value']}/{epochs}  loss ")

    result = client.wait(prompt_id, timeout=300)
    assert result.interrupted and not result.succeeded
    stopped = next(data for kind, data in result.history["status"]["messages"] if kind == "execution_interrupted")
    assert stopped["node_id"] == FINETUNE_NODE, "stopped inside the training node"
    assert not result.output_images(LOSS_PLOT_NODE)
    assert not (p3s_folder(comfy_server) / name).exists()
    assert not leftovers(comfy_server)

    after = client.run(selection_workflow(SCENE_NAME, twin_points_json(), CLIP_NAME, prefix="after_interrupt"))
    assert after.succeeded, after.error
    assert after.output_images("6"), "the server still runs prompts"
