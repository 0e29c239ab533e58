"""Bad input through POST /prompt on the real server: /history says error, with the pack's words.

A representative dozen of the cases of tests/pack/test_bad_input.py, sent as an API user would
(NaN as JSON's NaN, points as a JSON object), plus: a prompt whose only output cannot run is
refused as a whole (P3S Points is no output node), and ``comfy_host serve`` stops ComfyUI on
SIGTERM.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from devtools.api_client import ComfyAPIError, ComfyClient
from devtools.comfy_host import ComfyServer, free_port
from devtools.sample_scene import twin_points_json
from devtools.workflows import finetune_workflow, selection_workflow

from .conftest import CHECKPOINT_NAME, CLIP_NAME, SCENE_NAME

pytestmark = pytest.mark.host
REPO_ROOT = Path(__file__).resolve().parents[2]
KJ_PIXELS = json.dumps([{"x": 120, "y": 80}])  # KJNodes PointsEditor's positive_coords, normalize off


def points_only(points) -> dict:
    return {
        "1": {"class_type": "P3SPoints", "inputs": {"points": points}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 1]}},
    }


def selection(**changes) -> dict:
    prompt = selection_workflow(SCENE_NAME, twin_points_json(), CLIP_NAME, prefix="badinput")
    for key, value in changes.items():
        node, name = key.split(".")
        prompt[node]["inputs"][name] = value
    return prompt


def finetune(**changes) -> dict:
    prompt = finetune_workflow(CHECKPOINT_NAME, CLIP_NAME, SCENE_NAME, twin_points_json(), "p3s/ok.safetensors")
    inputs = prompt["21"]["inputs"]
    for name, value in {"lora_rank": 4, "lora_alpha": 4.0, "save_every": 0}.items():
        inputs.setdefault(name, value)  # inputs that finetune_workflow may not set
    inputs.update(changes)
    return prompt


CASES = [
    ("kj pixels pasted", points_only(KJ_PIXELS), "P3SPoints", "connect the Points Editor's positive_coords"),
    ("unknown key", points_only('{"images": [{"positív": [[0.5, 0.5]]}]}'), "P3SPoints", "did you mean 'positive'"),
    ("nested 5000 deep", points_only("[" * 5000 + "]" * 5000), "P3SPoints", "nested 5000 levels deep"),
    ("5 MB points", points_only("x" * 5_000_000), "P3SPoints", "5000000 characters long"),
    ("version 2", points_only('{"version": 2, "images": []}'), "P3SPoints", "version 2 is not one"),
    (
        "extra point sets",
        selection(**{"2.points": json.dumps({"images": [json.loads(twin_points_json())["images"][0]] * 2})}),
        "P3SRngrMask",
        "2 point sets for 1 reference image(s)",
    ),
    ("sigma NaN", selection(**{"4.sigma": math.nan}), "P3SRngrMask", "sigma is nan"),
    ("fill NaN", selection(**{"5.fill": math.nan}), "P3SInpaint", "fill is nan"),
    ("save_name con", finetune(save_name="con"), "P3SFineTune", "reserved device name"),
    ("save_name NUL", finetune(save_name="a\x00b"), "P3SFineTune", "contains '\\x00'"),
    ("save_name 312 characters", finetune(save_name="a" * 312), "P3SFineTune", "file systems allow 255"),
    ("gamma NaN", finetune(gamma=math.nan), "P3SFineTune", "gamma is nan"),
]


@pytest.mark.parametrize(("prompt", "node_type", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_an_error_in_history_with_the_message_alone(
    client: ComfyClient, comfy_server: ComfyServer, prompt: dict, node_type: str, message: str
):
    saved = comfy_server.base_dir / "models" / "p3s"
    before = sorted(saved.rglob("*")) if saved.exists() else []
    started = time.monotonic()
    result = client.run(prompt)
    assert result.history["status"]["status_str"] == "error"
    error = result.error
    assert error["node_type"] == node_type
    assert error["exception_type"] == "P3SInputError"
    assert message in error["exception_message"]
    assert len(error["exception_message"]) < 1000, "long values are quoted as an excerpt"
    assert str(comfy_server.base_dir) not in error["exception_message"], "no server path"
    if node_type == "P3SFineTune":
        assert (sorted(saved.rglob("*")) if saved.exists() else []) == before, "nothing written"
        assert time.monotonic() - started < 120, "refused before training"


def test_a_dict_for_points_and_version_1_as_text_are_accepted(client: ComfyClient):
    points = {"version": "1", "images": [{"positive": [[0.5, 0.5]], "negative": []}]}
    result = client.run(points_only(points))  # ComfyUI hands the object over as str(dict)
    assert result.succeeded, result.error


def test_a_prompt_whose_outputs_cannot_run_is_refused_whole(client: ComfyClient):
    prompt = selection(**{"3.clip_name": "absent.safetensors"})
    with pytest.raises(ComfyAPIError) as info:  # before: P3S Points alone ran and /history said success
        client.submit(prompt)
    assert "absent.safetensors" in str(info.value) and "node_errors" in (info.value.body or {})


def test_serve_stops_its_comfyui_child_on_sigterm(tmp_path: Path):
    port = free_port()
    serve = subprocess.Popen(
        [sys.executable, "-m", "devtools.comfy_host", "serve", "--base-dir", str(tmp_path), "--port", str(port)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        started = json.loads(serve.stdout.readline())
        child = started["pid"]
        with urllib.request.urlopen(f"{started['url']}/object_info", timeout=10) as response:
            assert response.status == 200
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) != 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _alive(child):
            time.sleep(0.2)
        assert not _alive(child), "the ComfyUI child was left running"
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "zombie" in status.read_text())
