"""The examples as a user gets them: listed and served by the template browser with thumbnails, and
queued as shipped by a third-party API client (comfy-api-simplified, from PyPI) on the host with the
stand-in models under the standard file names.

Queued as shipped except for CPU cost: the full pipeline at its shipped settings fine-tunes the
whole U-Net copy for 60 epochs at 512 px and samples 50 steps at 512 px, hours on a CPU and more
memory than the test machine has. The test lowers only those settings (epochs, training resolution,
scope, sampling steps and size: devtools.workflows.SMALL_PIPELINE) and asserts that nothing else
differs from the shipped file: models, input image, points, prompts, file names and save names
are the example's own.
"""

from __future__ import annotations

import asyncio
import io
import json

import numpy as np
import pytest
from comfy_api_simplified import ComfyApiWrapper, ComfyWorkflowWrapper
from PIL import Image
from safetensors import safe_open

from devtools.api_client import ComfyAPIError, ComfyClient
from devtools.comfy_host import PACK_LINK_NAME, REPO_ROOT, ComfyServer
from devtools.sample_scene import LEFT_CENTRE, RIGHT_CENTRE, disc_mask
from devtools.workflows import SETTING_INPUTS, SMALL_PIPELINE, example_api
from p3s_core.model.model_file import KEY_FORMAT, KEY_TRAINING

from .conftest import SCENE_NAME

pytestmark = pytest.mark.host

EXAMPLES = REPO_ROOT / "example_workflows"
# p3s_generate_with_model loads the P3S model that p3s_full_pipeline saves.
ORDER = ["p3s_select_subject", "p3s_full_pipeline", "p3s_generate_with_model"]
# p3s_two_subjects needs a second trained model: it runs in test_two_subjects_api.py; the SDXL
# example needs the SDXL stand-in: it runs in test_sdxl_api.py.
LISTED = [*ORDER, "p3s_two_subjects", "p3s_sdxl_full_pipeline"]


def test_the_template_browser_lists_the_examples_and_serves_them_with_thumbnails(client: ComfyClient):
    listed = client.get_json("/workflow_templates")[PACK_LINK_NAME]
    assert sorted(listed) == sorted(LISTED), "API twins are not listed"
    for name in LISTED:
        served = client.get_json(f"/api/workflow_templates/{PACK_LINK_NAME}/{name}.json")
        assert served == json.loads((EXAMPLES / f"{name}.json").read_text())
        thumbnail = client.get_bytes(f"/api/workflow_templates/{PACK_LINK_NAME}/{name}.jpg")
        with Image.open(io.BytesIO(thumbnail)) as image:
            assert image.format == "JPEG" and image.width >= 256


def _lowered(workflow: ComfyWorkflowWrapper) -> None:
    """Lower the CPU-cost settings through the client's own API (nodes found by title)."""
    titles = {node["class_type"]: node["_meta"]["title"] for node in workflow.values()}
    for setting, value in SMALL_PIPELINE.items():
        for class_type, names in SETTING_INPUTS[setting]:
            if class_type in titles:
                for name in names:
                    workflow.set_node_param(titles[class_type], name, value)


def _changed(shipped: dict, queued: dict) -> set[tuple[str, str]]:
    return {
        (node["class_type"], name)
        for node_id, node in shipped.items()
        for name, value in node["inputs"].items()
        if queued[node_id]["inputs"][name] != value
    }


def test_every_api_example_runs_as_shipped_through_comfy_api_simplified(comfy_server: ComfyServer):
    api = ComfyApiWrapper(comfy_server.url)
    allowed = {(c, n) for setting in SMALL_PIPELINE for c, names in SETTING_INPUTS[setting] for n in names}
    histories = {}
    model_file = comfy_server.base_dir / "models" / "p3s" / "p3s" / "my_subject.safetensors"
    try:
        for name in ORDER:
            workflow = ComfyWorkflowWrapper(str(EXAMPLES / "api" / f"{name}.api.json"))  # the file as shipped
            _lowered(workflow)
            assert _changed(example_api(name), dict(workflow)) <= allowed
            prompt_id, _ = asyncio.run(api.queue_prompt_and_wait(dict(workflow)))
            history = api.get_history(prompt_id)[prompt_id]
            assert history["status"]["status_str"] == "success", (name, history["status"]["messages"][-1:])
            for node_id, node in workflow.items():
                if node["class_type"] == "SaveImage":
                    records = history["outputs"].get(node_id, {}).get("images", [])
                    assert records, f"{name}: {node['_meta']['title']} wrote nothing"
                    data = api.get_image(records[0]["filename"], records[0]["subfolder"], records[0]["type"])
                    assert Image.open(io.BytesIO(data)).size[0] > 0
            histories[name] = (dict(workflow), history)
            if name == "p3s_full_pipeline":
                with safe_open(str(model_file), framework="pt") as handle:
                    metadata = handle.metadata()
                assert metadata[KEY_FORMAT] == "p3s-model"
                training = json.loads(metadata[KEY_TRAINING])
                assert (training["epochs"], training["scope"]) == (SMALL_PIPELINE["epochs"], SMALL_PIPELINE["scope"])
    finally:
        model_file.unlink(missing_ok=True)  # large: the test keeps no copy

    # The stages did their work: the subject (left twin) is selected, one overlay per word.
    selection, history = histories["p3s_select_subject"]
    assert selection["1"]["inputs"]["image"] == SCENE_NAME, "the shipped input image, found by name"
    (record,) = history["outputs"]["8"]["images"]  # the subject mask preview
    mask = np.asarray(Image.open(io.BytesIO(api.get_image(record["filename"], record["subfolder"], "temp"))))
    mask = (mask if mask.ndim == 2 else mask[..., 0]) > 127
    assert mask[disc_mask(LEFT_CENTRE)].mean() > 0.95 and not mask[disc_mask(RIGHT_CENTRE)].any()
    pipeline, history = histories["p3s_full_pipeline"]
    outputs = history["outputs"]
    by_title = {node["_meta"]["title"]: outputs.get(i, {}).get("images", []) for i, node in pipeline.items()}
    assert len(by_title["Save attention copy"]) == 2, "one overlay per word (sks, toy)"
    generated = by_title["Save generated"][0]
    image = Image.open(io.BytesIO(api.get_image(generated["filename"], generated["subfolder"], "output")))
    assert image.size == (SMALL_PIPELINE["size"],) * 2


def _refusal(client: ComfyClient, prompt: dict) -> list[str]:
    """The messages with which ComfyUI refuses ``prompt``, at validation or when the node runs:
    versions differ in when they check a V3 combo's value (0.8.0 before running, 0.3.75 when run)."""
    try:
        answer = client.submit(prompt)
    except ComfyAPIError as error:  # no valid output: refused at validation
        return [str(error)]
    if answer.get("node_errors"):
        return [json.dumps(answer["node_errors"])]
    result = client.wait(answer["prompt_id"])
    return [] if result.succeeded else [json.dumps(result.error)]


def test_an_absent_p3s_model_file_is_refused_with_its_name_whenever_the_version_checks(client: ComfyClient):
    prompt = {
        "1": {"class_type": "P3SLoader", "inputs": {"model_name": "p3s/absent_subject.safetensors"}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 1]}},
    }
    (message,) = _refusal(client, prompt)
    assert ("absent_subject.safetensors" in message and "model_name" in message) or "P3SLoader" in message


def test_absent_base_model_files_are_refused_before_anything_runs(client: ComfyClient):
    prompt = example_api("p3s_generate_with_model")
    prompt["10"]["inputs"]["ckpt_name"] = "absent_sd15.safetensors"
    answer = None
    try:
        answer = client.submit(prompt)
        message = json.dumps(answer["node_errors"])
    except ComfyAPIError as error:  # refused whole: no output node of it is valid
        message = str(error)
    finally:
        if answer:
            client.wait(answer["prompt_id"])
    assert "absent_sd15.safetensors" in message and "ckpt_name" in message and "value_not_in_list" in message
