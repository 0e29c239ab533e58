"""The README's demo: subject selection on the embedded sample scene, through ComfyUI's HTTP API.

Starts the host ComfyUI with this pack, uploads the sample scene (two identical red subjects),
queues P3S Points -> P3S RNGR Mask -> P3S Inpaint with a positive point on the left twin and a
negative one on the right twin, and lists the written images (masks, heat map, cleaned image).

Without a CLIP vision model in ``models/clip_vision`` it writes a stand-in with the real
ViT-L/14 shapes (see devtools/standin_models.py): it works on colour scenes like the sample
only. For real photos put ``clip-vit-large-patch14`` (as a .safetensors) there.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from devtools.api_client import ComfyClient
from devtools.comfy_host import HOST_DIR, REPO_ROOT, running_server
from devtools.sample_scene import twin_points_json, write_twin_scene
from devtools.standin_models import write_clip_vision_standin
from devtools.workflows import selection_workflow

STANDIN_CLIP = "p3s_standin_vit_l14.safetensors"


def pick_clip_vision(folder: Path) -> str:
    """The first real CLIP vision file in ``folder``, else the stand-in (written once)."""
    real = sorted(p.name for p in folder.glob("*.safetensors") if p.name != STANDIN_CLIP)
    if real:
        print(f"[demo] CLIP vision: {real[0]} (from {folder})")
        return real[0]
    write_clip_vision_standin(folder / STANDIN_CLIP)
    print(
        f"[demo] No CLIP vision model in {folder}: using the stand-in {STANDIN_CLIP} (ViT-L/14 shapes, "
        "weights built for colour scenes).\n"
        "       Masks of real photos need the real model: put clip-vit-large-patch14 (.safetensors) there."
    )
    return STANDIN_CLIP


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-dir", type=Path, default=HOST_DIR / "demo", help="ComfyUI base directory")
    parser.add_argument("--output-dir", type=Path, default=REPO_ROOT / "output" / "demo")
    args = parser.parse_args(argv)
    base, output = args.base_dir.resolve(), args.output_dir.resolve()
    output.mkdir(parents=True, exist_ok=True)
    clip_folder = base / "models" / "clip_vision"
    clip_folder.mkdir(parents=True, exist_ok=True)
    clip_name = pick_clip_vision(clip_folder)
    scene = write_twin_scene(HOST_DIR / "p3s_twins.png")
    started = time.monotonic()
    print("[demo] starting ComfyUI ...")
    with running_server(base, extra_args=["--output-directory", str(output)]) as server:
        print(f"[demo] ComfyUI answers at {server.url} after {time.monotonic() - started:.0f} s")
        client = ComfyClient(server.url)
        image_name = client.upload_image(scene)
        result = client.run(selection_workflow(image_name, twin_points_json(), clip_name, prefix="p3s_demo"))
        if not result.succeeded:
            print(f"[demo] the workflow failed: {result.error}", file=sys.stderr)
            return 1
        files = [
            output / record.get("subfolder", "") / record["filename"]
            for node in result.history["outputs"]
            for record in result.output_images(node)
            if record.get("type") == "output"
        ]
    print(f"[demo] done in {time.monotonic() - started:.0f} s; outputs:")
    for path in sorted(files):
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
