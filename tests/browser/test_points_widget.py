"""The P3S Points widget in the real frontend: click points, reload, queue, check the server's result.

Every test runs in both renderers: the LiteGraph canvas and Nodes 2.0 (``Comfy.VueNodes.Enabled``).

Set ``P3S_SCREENSHOT_DIR`` to keep a screenshot of the widget with its points (docs/images/).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from host_helpers import (
    IMAGE_H,
    IMAGE_NAME,
    IMAGE_W,
    fetch_image,
    history_ids,
    http_json,
    make_reference_image,
    wait_for_history,
)

from devtools.comfy_host import REPO_ROOT, ComfyServer
from devtools.sample_scene import write_twin_scene
from devtools.standin_models import write_clip_vision_standin
from p3s_core.inspection.preview import NEGATIVE_RGB, POSITIVE_RGB
from p3s_core.selection.points import parse_points_json

WORKFLOW = Path(__file__).with_name("points_workflow.json")
CLIP_STANDIN = "p3s_standin_vit_l14.safetensors"
MODEL_CACHE = Path(os.environ.get("P3S_TEST_MODEL_CACHE", REPO_ROOT / ".host" / "models"))
POINTS_NODE, PREVIEW_NODE = "2", "3"

# Normalised positions of the clicks (x right, y down).
SUBJECT = (0.30, 0.50)
SUBJECT_AFTER_DRAG = (0.34, 0.55)
LOOKALIKE = (0.75, 0.30)
BACKGROUND = (0.80, 0.80)
REMOVED = (0.55, 0.45)
SECOND_IMAGE_SUBJECT = (0.60, 0.40)

NODE = "window.app?.graph?.getNodeById(2)"
POINTS_VALUE = f"() => {NODE}.widgets.find((w) => w.name === 'points').value"


RENDERERS = pytest.mark.parametrize("vue_nodes", [False, True], ids=["litegraph", "vue"])


def open_app(page, server: ComfyServer, vue_nodes: bool) -> None:
    """Open the frontend with the renderer chosen (the setting is stored on the server, so it survives reloads)."""
    page.goto(server.url)
    page.wait_for_function("() => window.app?.graph && window.LiteGraph", timeout=90_000)
    page.evaluate("async (on) => { await app.extensionManager.setting.set('Comfy.VueNodes.Enabled', on); }", vue_nodes)
    assert page.evaluate("() => LiteGraph.vueNodesMode") == vue_nodes


def load_workflow(page, workflow: dict) -> None:
    page.evaluate("async (wf) => { app.graph.clear(); await app.loadGraphData(wf); }", workflow)


def canvas_point(page, normalised: tuple[float, float], aspect: float = IMAGE_W / IMAGE_H) -> tuple[float, float]:
    """Page coordinates of a normalised image point, through the widget's letterboxed image area."""
    box = page.locator("canvas.p3s-points-canvas").bounding_box()
    width = min(box["width"], box["height"] * aspect)
    height = width / aspect
    left = box["x"] + (box["width"] - width) / 2
    top = box["y"] + (box["height"] - height) / 2
    return left + normalised[0] * width, top + normalised[1] * height


def click_holding(page, key: str, position: tuple[float, float]) -> None:
    page.keyboard.down(key)
    page.mouse.click(*position)
    page.keyboard.up(key)


def points_value(page) -> dict:
    return json.loads(page.evaluate(POINTS_VALUE))


def assert_points(actual: list, expected: list[tuple[float, float]]) -> None:
    assert len(actual) == len(expected), (actual, expected)
    for (x, y), (ex, ey) in zip(actual, expected, strict=True):
        assert abs(x - ex) < 0.01 and abs(y - ey) < 0.01, (actual, expected)


def wait_for_image(page) -> None:
    page.wait_for_function(f"() => {NODE}?.p3sEditor?.currentEntry()?.state === 'ready'", timeout=30_000)


def node_clip(page, vue_nodes: bool = False) -> dict:
    """The page rectangle of the P3S Points node, title included, with a small margin."""
    if vue_nodes:
        box = page.locator('[data-node-id="2"]').bounding_box()
        return {"x": box["x"] - 8, "y": box["y"] - 8, "width": box["width"] + 16, "height": box["height"] + 16}
    return page.evaluate(
        """() => {
          const node = app.graph.getNodeById(2);
          const title = LiteGraph.NODE_TITLE_HEIGHT;
          const dpr = window.devicePixelRatio || 1;
          const [x, y] = app.canvas.ds.convertOffsetToCanvas([node.pos[0], node.pos[1] - title]);
          const r = app.canvas.canvas.getBoundingClientRect();
          const s = app.canvas.ds.scale;
          return {x: r.left + x / dpr - 8, y: r.top + y / dpr - 8,
                  width: node.size[0] * s + 16, height: (node.size[1] + title) * s + 16};
        }"""
    )


def status_text(page) -> str:
    return page.evaluate(f"() => {NODE}.p3sEditor.status.textContent")


@pytest.mark.host
@RENDERERS
def test_points_picked_in_the_browser_survive_reload_and_reach_the_server(browser, comfy_server, tmp_path, vue_nodes):
    make_reference_image(comfy_server.base_dir / "input" / IMAGE_NAME)
    # Another drag target per renderer, so the second run is not served from the server's cache.
    drag_to = (SUBJECT_AFTER_DRAG[0] + 0.02 * vue_nodes, SUBJECT_AFTER_DRAG[1])
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # Load the saved workflow (LoadImage -> P3S Points -> Preview Image); the widget follows the
    # LoadImage without any run. The frontend's own JSON box stays hidden in both renderers.
    open_app(page, comfy_server, vue_nodes)
    load_workflow(page, json.loads(WORKFLOW.read_text()))
    wait_for_image(page)
    assert points_value(page)["images"] == [{"positive": [], "negative": []}]
    assert status_text(page) == ""
    assert page.locator("textarea.comfy-multiline-input:visible, .lg-node textarea:visible").count() == 0

    # The node's menu entries come through the extension hook in this frontend.
    menu = page.evaluate("() => app.collectNodeMenuItems(app.graph.getNodeById(2)).filter(Boolean).map(i => i.content)")
    assert "P3S: clear points of all images" in menu
    shown = page.evaluate("() => app.canvas.getNodeMenuOptions(app.graph.getNodeById(2)).map((i) => i?.content)")
    assert shown.count("P3S: clear points of all images") == 1, "listed once, not also through getExtraMenuOptions"

    # Click: positive (left), negative (right), negative (shift+left); add one and remove it again
    # (alt+click); drag the subject point.
    page.mouse.click(*canvas_point(page, SUBJECT))
    page.mouse.click(*canvas_point(page, LOOKALIKE), button="right")
    click_holding(page, "Shift", canvas_point(page, BACKGROUND))
    page.mouse.click(*canvas_point(page, REMOVED))
    assert len(points_value(page)["images"][0]["positive"]) == 2
    click_holding(page, "Alt", canvas_point(page, REMOVED))
    page.mouse.move(*canvas_point(page, SUBJECT))
    page.mouse.down()
    page.mouse.move(*canvas_point(page, drag_to), steps=6)
    page.mouse.up()
    # A second point set for the next image of the batch (no image for it yet: a square placeholder).
    page.get_by_title("Next image of the batch", exact=False).click()
    assert page.evaluate(f"() => {NODE}.p3sEditor.label.textContent") == "Image 2 / 2"
    assert "connect a Load Image" in status_text(page) and "run the workflow once" in status_text(page)
    page.mouse.click(*canvas_point(page, SECOND_IMAGE_SUBJECT, aspect=1.0))
    page.get_by_title("Previous image of the batch").click()

    value = points_value(page)
    assert_points(value["images"][0]["positive"], [drag_to])
    assert_points(value["images"][0]["negative"], [LOOKALIKE, BACKGROUND])
    assert_points(value["images"][1]["positive"], [SECOND_IMAGE_SUBJECT])
    assert value["images"][1]["negative"] == []
    text = page.evaluate(POINTS_VALUE)
    assert parse_points_json(text).to_json()  # the Python node accepts what the widget wrote
    workflow = page.evaluate("() => app.graph.serialize()")
    saved = next(n for n in workflow["nodes"] if n["id"] == 2)
    assert saved["widgets_values"][0] == text  # then kj_width, kj_height

    # Reload the page: the points come back from the persisted workflow, drawn on the image.
    page.wait_for_function(
        "(text) => (localStorage.getItem('workflow') || '').includes(JSON.stringify(text))", arg=text
    )
    page.reload()
    page.wait_for_function(f"() => {NODE}?.p3sEditor", timeout=90_000)
    assert page.evaluate("() => LiteGraph.vueNodesMode") == vue_nodes
    assert page.evaluate(POINTS_VALUE) == text
    wait_for_image(page)
    assert page.evaluate(f"() => {NODE}.p3sEditor.counts.textContent") == "+1 −2"
    assert page.evaluate(f"() => {NODE}.p3sEditor.label.textContent") == "Image 1 / 2"

    # Re-open the workflow saved before the reload, over an emptied graph: same points.
    page.evaluate("async (wf) => { app.graph.clear(); await app.loadGraphData(wf); }", workflow)
    assert page.evaluate(POINTS_VALUE) == text
    assert page.evaluate(f"() => {NODE}.p3sEditor.counts.textContent") == "+1 −2"

    # One image in the batch: the server wants one point set, so clear the second one again.
    page.get_by_title("Next image of the batch", exact=False).click()
    page.get_by_title("Remove the points of this image").click()
    page.get_by_title("Previous image of the batch").click()
    text = page.evaluate(POINTS_VALUE)
    assert len(json.loads(text)["images"]) == 1

    # Queue from the UI; the server must have received exactly the widget's JSON.
    earlier = history_ids(comfy_server)
    page.evaluate("async () => { await app.queuePrompt(0, 1); }")
    entry = wait_for_history(comfy_server, exclude=earlier)
    assert entry["status"]["status_str"] == "success", entry["status"]
    api_prompt = entry["prompt"][2]
    assert api_prompt[POINTS_NODE]["inputs"]["points"] == text

    # The preview IMAGE has the markers at the clicked places, at full resolution.
    preview = fetch_image(comfy_server, entry["outputs"][PREVIEW_NODE]["images"][0])
    assert preview.shape == (IMAGE_H, IMAGE_W, 3)
    for (x, y), colour in (
        (drag_to, POSITIVE_RGB),
        (LOOKALIKE, NEGATIVE_RGB),
        (BACKGROUND, NEGATIVE_RGB),
    ):
        pixel = preview[int(y * IMAGE_H), int(x * IMAGE_W)] / 255.0
        assert np.allclose(pixel, colour, atol=0.03), (x, y, pixel, colour)

    # The widget's copy of the image comes downscaled from the run, and is kept with the node.
    shown = fetch_image(comfy_server, entry["outputs"][POINTS_NODE]["p3s_images"][0])
    assert max(shown.shape[:2]) == 1024 and shown.shape[:2] == (768, 1024)
    page.wait_for_function(f"() => {NODE}.properties.p3s_run_images?.length === 1")

    # The API-format prompt of the same workflow, as the UI exports it, queues unchanged.
    exported = page.evaluate("async () => (await app.graphToPrompt()).output")
    assert exported[POINTS_NODE]["inputs"]["points"] == text
    prompt_id = http_json(comfy_server, "/prompt", {"prompt": exported, "client_id": "p3s-test"})["prompt_id"]
    assert wait_for_history(comfy_server, prompt_id)["status"]["status_str"] == "success"

    shot = tmp_path / "p3s_points_widget.png"
    page.screenshot(path=str(shot), clip=node_clip(page, vue_nodes))
    if vue_nodes and os.environ.get("P3S_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["P3S_SCREENSHOT_DIR"]) / shot.name)
    assert errors == []
    page.close()


@pytest.mark.host
@RENDERERS
def test_the_wheel_over_the_widget_zooms_the_graph(browser, comfy_server, vue_nodes):
    make_reference_image(comfy_server.base_dir / "input" / IMAGE_NAME)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    open_app(page, comfy_server, vue_nodes)
    load_workflow(page, json.loads(WORKFLOW.read_text()))
    wait_for_image(page)
    before = page.evaluate(POINTS_VALUE)
    scale = page.evaluate("() => app.canvas.ds.scale")
    page.mouse.move(*canvas_point(page, (0.5, 0.5)))
    page.mouse.wheel(0, -200)
    page.wait_for_function("(s) => app.canvas.ds.scale > s * 1.05", arg=scale, timeout=5_000)
    assert page.evaluate(POINTS_VALUE) == before
    page.close()


SELECTION_EXAMPLE = REPO_ROOT / "example_workflows" / "p3s_select_subject.json"


@pytest.mark.host
@RENDERERS
def test_previews_keep_the_node_size_after_a_run(browser, comfy_server, vue_nodes):
    """The RNGR Mask's heat map shows inside the node: it does not grow over the Preview Image below."""
    clip = write_clip_vision_standin(MODEL_CACHE / "clip_vision" / CLIP_STANDIN)
    target = comfy_server.base_dir / "models" / "clip_vision" / CLIP_STANDIN
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(clip)
    write_twin_scene(comfy_server.base_dir / "input" / "p3s_twins.png")
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    open_app(page, comfy_server, vue_nodes)
    page.evaluate("async () => { await app.refreshComboInNodes(); }")
    workflow = json.loads(SELECTION_EXAMPLE.read_text())
    for node in workflow["nodes"]:
        if node["type"] == "CLIPVisionLoader":
            node["widgets_values"] = [CLIP_STANDIN]
        if node["type"] == "LoadImage":
            node["widgets_values"][0] = "p3s_twins.png"
        if node["type"] == "P3SRngrMask":
            node["widgets_values"][2] += int(vue_nodes)  # another dilation: not served from the cache
    load_workflow(page, workflow)
    mask_id = next(n["id"] for n in workflow["nodes"] if n["type"] == "P3SRngrMask")
    page.wait_for_timeout(1000)
    boxes = "() => app.graph.nodes.map((n) => ({id: n.id, x: n.pos[0], y: n.pos[1], w: n.size[0], h: n.size[1]}))"
    before = {b["id"]: b for b in page.evaluate(boxes)}
    earlier = history_ids(comfy_server)
    page.evaluate("async () => { await app.queuePrompt(0, 1); }")
    entry = wait_for_history(comfy_server, exclude=earlier, timeout=120)
    assert entry["status"]["status_str"] == "success", entry["status"]
    shown = "(id) => app.graph.getNodeById(id).imgs?.length || document.querySelector(`[data-node-id='${id}'] img`)"
    page.wait_for_function(shown, arg=mask_id, timeout=30_000)
    page.wait_for_timeout(1500)  # the frontend lays the preview out (and Vue syncs node sizes) after it loads
    after = {b["id"]: b for b in page.evaluate(boxes)}
    mask = after[mask_id]
    title = page.evaluate("() => LiteGraph.NODE_TITLE_HEIGHT")
    assert mask["h"] <= before[mask_id]["h"] + 40, (before[mask_id], mask)
    for other in after.values():
        if other["id"] == mask_id:
            continue
        overlap_x = mask["x"] < other["x"] + other["w"] and other["x"] < mask["x"] + mask["w"]
        overlap_y = mask["y"] < other["y"] + other["h"] and other["y"] - title < mask["y"] + mask["h"]
        assert not (overlap_x and overlap_y), f"RNGR Mask {mask} overlaps node {other}"
    page.close()


GREEN_RGB = (34, 197, 94)  # the widget's positive marker colour (#22c55e)
RED_RGB = (239, 68, 68)  # its negative marker colour (#ef4444)
WIDGET_PIXELS = """([x, y, offsets]) => {
  const editor = app.graph.getNodeById(2).p3sEditor;
  const rect = editor.imageRect(editor.currentEntry());
  const dpr = window.devicePixelRatio || 1;
  const ctx = editor.canvas.getContext("2d");
  return offsets.map((dx) => {
    const px = Math.floor((rect.x + x * rect.w + dx) * dpr);
    const py = Math.floor((rect.y + y * rect.h) * dpr);
    return Array.from(ctx.getImageData(px, py, 1, 1).data.slice(0, 3));
  });
}"""


def widget_pixels(page, normalised: tuple[float, float], offsets=(0,)) -> list[list[int]]:
    """RGB of the widget canvas at a normalised image point, shifted right by ``offsets`` CSS pixels."""
    return page.evaluate(WIDGET_PIXELS, [normalised[0], normalised[1], list(offsets)])


def near(rgb, colour, tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(rgb, colour, strict=True))


RING = (5, 6, 7, 8, 9, -5, -6, -7, -8, -9)  # CSS pixels from a marker's centre across its outline


def queue_and_wait(page, server) -> None:
    earlier = history_ids(server)
    page.evaluate("async () => { await app.queuePrompt(0, 1); }")
    entry = wait_for_history(server, exclude=earlier)
    assert entry["status"]["status_str"] == "success", entry["status"]


@pytest.mark.host
@RENDERERS
def test_points_from_the_kj_inputs_are_drawn_hollow_in_place_of_the_widgets(browser, comfy_server, vue_nodes):
    make_reference_image(comfy_server.base_dir / "input" / IMAGE_NAME)
    own_positive, own_negative = (0.5, 0.5), (0.75, 0.30)  # blue background, orange square
    kj_point = (0.30 + 0.02 * vue_nodes, 0.50)  # on the yellow disc; per renderer, so no cached run
    kj_text = json.dumps([{"x": round(kj_point[0] * IMAGE_W), "y": round(kj_point[1] * IMAGE_H)}])
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    open_app(page, comfy_server, vue_nodes)
    load_workflow(page, json.loads(WORKFLOW.read_text()))
    own = {"version": 1, "images": [{"positive": [list(own_positive)], "negative": [list(own_negative)]}]}
    page.evaluate(f"(text) => {NODE}.p3sEditor.writeText(text)", json.dumps(own))
    wait_for_image(page)
    assert near(widget_pixels(page, own_positive)[0], GREEN_RGB), "the widget's own point is drawn filled"

    # A string node in KJNodes' Points Editor format (pixels on the image) into kj_positive.
    page.evaluate(
        """(text) => {
          const source = LiteGraph.createNode("PrimitiveString");
          source.pos = [420, 620];
          app.graph.add(source);
          source.widgets.find((w) => w.name === "value").value = text;
          const points = app.graph.getNodeById(2);
          source.connect(0, points, points.inputs.findIndex((i) => i.name === "kj_positive"));
        }""",
        kj_text,
    )
    queue_and_wait(page, comfy_server)
    page.wait_for_function(f"() => {NODE}.p3sEditor.kjRun?.kj?.includes('positive')", timeout=30_000)
    wait_for_image(page)
    centre, *ring = widget_pixels(page, kj_point, (0, *RING))
    assert any(near(rgb, GREEN_RGB) for rgb in ring), ring
    assert not near(centre, GREEN_RGB, 80), f"the KJ marker is hollow: {centre}"
    assert not near(widget_pixels(page, own_positive)[0], GREEN_RGB, 80), "the unused own positive is hidden"
    assert near(widget_pixels(page, own_negative)[0], RED_RGB), "the own negative, still used, stays filled"
    assert "kj_positive" in status_text(page)

    # Without the KJ input the next run draws the widget's own points again.
    page.evaluate(f"() => {NODE}.disconnectInput({NODE}.inputs.findIndex((i) => i.name === 'kj_positive'))")
    queue_and_wait(page, comfy_server)
    page.wait_for_function(f"() => {NODE}.p3sEditor.kjRun === null", timeout=30_000)
    wait_for_image(page)
    assert near(widget_pixels(page, own_positive)[0], GREEN_RGB)
    assert not any(near(rgb, GREEN_RGB) for rgb in widget_pixels(page, kj_point, RING))
    assert status_text(page) == ""
    assert errors == []
    page.close()
