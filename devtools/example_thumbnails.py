"""Template thumbnails (``example_workflows/<name>.jpg``) from a real run of each example.

Each API twin is queued on the host ComfyUI with the stand-in models under the standard file names
(devtools/model_files.py) and the shipped input image, with only the CPU-cost settings lowered
(:data:`devtools.workflows.SMALL_PIPELINE`: epochs, training resolution, scope, sampling steps and
size); the images it saves are tiled with their node titles, under a banner that says they come
from stand-in models. Called by ``python -m devtools.export_examples`` after it writes the examples.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from devtools.api_client import ComfyClient
from devtools.comfy_host import REPO_ROOT, running_server
from devtools.model_files import link_standins
from devtools.workflows import SMALL_PIPELINE, example_api, training_only, with_settings

EXAMPLES_DIR = REPO_ROOT / "example_workflows"
# Run order: p3s_generate_with_model loads the model that p3s_full_pipeline saves; p3s_two_subjects
# loads it too, and the second subject's model that :func:`train_second_subject` saves.
ORDER = [
    "p3s_select_subject",
    "p3s_full_pipeline",
    "p3s_generate_with_model",
    "p3s_two_subjects",
    "p3s_sdxl_full_pipeline",
]
NEEDS_FULL_PIPELINE = {"p3s_generate_with_model", "p3s_two_subjects"}
SIZE = (768, 512)
BANNER = "Real run on STAND-IN models (random SD1.5 weights, small CPU settings): generated images are noise"
SDXL_BANNER = "Real run on STAND-IN models (random SDXL-shaped weights, small CPU settings): generated images are noise"
SELECTION_BANNER = "Real run of this example on the STAND-IN CLIP vision model (built for colour scenes)"
TILE_LABEL_HEIGHT = 18


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def run_example(client: ComfyClient, name: str) -> list[tuple[str, Image.Image]]:
    """Queue example ``name`` (small settings) and return ``(node title, image)`` of every saved image."""
    prompt = with_settings(example_api(name), **SMALL_PIPELINE)
    result = client.run(prompt, timeout=1800)
    if not result.succeeded:
        raise RuntimeError(f"{name} failed on the stand-ins: {result.error}")
    images = []
    for node_id, node in prompt.items():
        if node["class_type"] not in ("SaveImage", "PreviewImage"):
            continue
        title = node.get("_meta", {}).get("title", node["class_type"])
        for record in result.output_images(node_id)[:1]:
            images.append((title, Image.open(io.BytesIO(client.view(record))).convert("RGB")))
    return images


def train_second_subject(client: ComfyClient) -> None:
    """The full pipeline (small settings) on the other twin, saving p3s_two_subjects' second model."""
    from devtools.export_examples import SECOND_INSTANCE_PROMPT, SECOND_SAVE_NAME, second_points_json

    prompt = training_only(with_settings(example_api("p3s_full_pipeline"), **SMALL_PIPELINE))
    for node in prompt.values():
        if node["class_type"] == "P3SPoints":
            node["inputs"]["points"] = second_points_json()
        elif node["class_type"] == "P3SFineTune":
            node["inputs"].update(save_name=SECOND_SAVE_NAME, instance_prompt=SECOND_INSTANCE_PROMPT)
            if "attention_word" in node["inputs"]:  # the training's attention overlay: its own identifier
                node["inputs"]["attention_word"] = SECOND_INSTANCE_PROMPT.split()[-2]
    result = client.run(prompt, timeout=1800)
    if not result.succeeded:
        raise RuntimeError(f"training the second subject failed on the stand-ins: {result.error}")


def compose(images: list[tuple[str, Image.Image]], banner: str = BANNER) -> Image.Image:
    """Tile the labelled images on a dark canvas of :data:`SIZE` under ``banner``."""
    canvas = Image.new("RGB", SIZE, (24, 28, 38))
    draw = ImageDraw.Draw(canvas)
    banner_height = 34
    draw.rectangle([0, 0, SIZE[0], banner_height], fill=(170, 30, 30))
    draw.text((8, 9), banner, fill="white", font=_font(13))
    columns = 3 if len(images) > 4 else 2
    rows = -(-len(images) // columns)
    cell_w = SIZE[0] // columns
    cell_h = (SIZE[1] - banner_height) // max(rows, 1)
    for index, (title, image) in enumerate(images):
        x, y = (index % columns) * cell_w, banner_height + (index // columns) * cell_h
        box = (cell_w - 8, cell_h - TILE_LABEL_HEIGHT - 6)
        small = image.width < box[0] and image.height < box[1]  # 64 px samples: enlarge them, pixels sharp
        fitted = ImageOps.contain(image, box, Image.Resampling.NEAREST if small else Image.Resampling.LANCZOS)
        canvas.paste(fitted, (x + (cell_w - fitted.width) // 2, y + TILE_LABEL_HEIGHT + 2))
        draw.text((x + 4, y + 3), title, fill=(230, 230, 230), font=_font(12))
    return canvas


def make_thumbnails(names: list[str] | None = None, out_dir: Path = EXAMPLES_DIR) -> list[Path]:
    """Run the examples (in :data:`ORDER`) and write ``<name>.jpg`` for each of ``names``."""
    wanted = set(names or ORDER)
    written = []
    with tempfile.TemporaryDirectory() as base:
        link_standins(Path(base), sdxl="p3s_sdxl_full_pipeline" in wanted)
        with running_server(Path(base)) as server:
            client = ComfyClient(server.url)
            for name, images in _runs(client, wanted):
                path = out_dir / f"{name}.jpg"
                banner = {"p3s_select_subject": SELECTION_BANNER, "p3s_sdxl_full_pipeline": SDXL_BANNER}.get(
                    name, BANNER
                )
                compose(images, banner).save(path, quality=85)
                written.append(path)
    return written


def _runs(client: ComfyClient, wanted: set[str]) -> Iterator[tuple[str, list[tuple[str, Image.Image]]]]:
    for name in ORDER:
        needed = name in wanted or (name == "p3s_full_pipeline" and bool(wanted & NEEDS_FULL_PIPELINE))
        if needed:
            if name == "p3s_two_subjects":
                train_second_subject(client)
            images = run_example(client, name)
            if name in wanted:
                yield name, images
