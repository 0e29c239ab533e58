"""The example workflows open in the real frontend with every node known, match their API twins, and
offer the download of the model files they name (this server has none)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devtools.comfy_host import REPO_ROOT
from devtools.model_files import CHECKPOINT, CLIP_VISION, download_entry

EXAMPLES = REPO_ROOT / "example_workflows"
NAMES = ["p3s_select_subject", "p3s_generate_with_model", "p3s_full_pipeline", "p3s_two_subjects"]

# The file's text is parsed in the page, as the template browser does (no null for absent fields).
LOAD_JS = """async (text) => {
    app.graph.clear();
    await app.loadGraphData(JSON.parse(text));
    await new Promise((resolve) => setTimeout(resolve, 300));
    const dialog = [...document.querySelectorAll('.p-dialog')].map((d) => d.textContent).join(' ');
    const alerts = document.body.innerText.includes('Invalid workflow');
    document.querySelectorAll('.p-toast-close-button').forEach((b) => b.click());
    return {
        types: app.graph.nodes.map((n) => n.type),
        unknown: app.graph.nodes.map((n) => n.type).filter((t) => !LiteGraph.registered_node_types[t]),
        broken: app.graph.nodes.filter((n) => n.has_errors).map((n) => n.type),
        dialog,
        alerts,
        api: await app.graphToPrompt().then((p) => p.output, (e) => String(e)),
    };
}"""


@pytest.fixture(scope="module")
def page(browser, comfy_server):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(comfy_server.url)
    page.wait_for_function("() => window.app?.graph && window.LiteGraph", timeout=90_000)
    yield page
    page.close()


def close_dialogs(page) -> None:
    """Close the load dialogs (missing nodes, missing models: one Escape each)."""
    for _ in range(4):
        if not page.query_selector(".p-dialog"):
            return
        page.keyboard.press("Escape")
        page.wait_for_timeout(300)
    page.wait_for_function("() => !document.querySelector('.p-dialog')", timeout=10_000)


@pytest.mark.parametrize("name", NAMES)
def test_example_loads_with_every_node_known_and_matches_its_api_twin(page, name: str):
    text = (EXAMPLES / f"{name}.json").read_text()
    workflow = json.loads(text)
    report = page.evaluate(LOAD_JS, text)
    assert sorted(report["types"]) == sorted(node["type"] for node in workflow["nodes"])
    assert report["unknown"] == [] and report["broken"] == []
    assert not report["alerts"], "the frontend's schema check accepts the file"
    # The frontend's missing-models dialog lists each loader's file with its download.
    models = [m for node in workflow["nodes"] for m in node.get("properties", {}).get("models", [])]
    assert models and all(m["name"] in report["dialog"] for m in models), report["dialog"]
    close_dialogs(page)
    twin = json.loads((EXAMPLES / "api" / f"{name}.api.json").read_text())
    assert report["api"] == twin, "the UI workflow and its API twin describe the same prompt"


def test_the_check_catches_an_unknown_node_type(page):
    workflow = json.loads((EXAMPLES / "p3s_select_subject.json").read_text())
    workflow["nodes"][0]["type"] = "P3SNoSuchNode"
    report = page.evaluate(LOAD_JS, json.dumps(workflow))
    close_dialogs(page)
    assert report["unknown"] == ["P3SNoSuchNode"]
    assert "P3SNoSuchNode" in report["dialog"]


def test_loader_nodes_carry_the_official_download_of_the_file_they_name():
    expected = {"CheckpointLoaderSimple": CHECKPOINT, "CLIPVisionLoader": CLIP_VISION}
    for name in NAMES:
        workflow = json.loads(Path(EXAMPLES / f"{name}.json").read_text())
        loaders = [node for node in workflow["nodes"] if node["type"] in expected]
        assert {node["type"] for node in loaders} >= {"CLIPVisionLoader"}
        for node in loaders:
            (entry,) = node["properties"]["models"]
            assert entry == download_entry(expected[node["type"]]) and node["widgets_values"][0] == entry["name"]
            assert entry["url"].startswith("https://huggingface.co/") and entry["url"].endswith(".safetensors")


def test_examples_are_ui_format_as_the_frontend_saves_it():
    for name in NAMES:
        workflow = json.loads(Path(EXAMPLES / f"{name}.json").read_text())
        assert {"nodes", "links", "version", "last_node_id", "last_link_id"} <= set(workflow)
        assert all({"id", "type", "pos", "size"} <= set(node) for node in workflow["nodes"])
