"""The README's demo: the whole P3S pipeline on the embedded sample scene, through ComfyUI's HTTP API.

Starts the host ComfyUI with this pack, uploads the sample scene (two identical red subjects) and
queues the example workflow ``p3s_full_pipeline`` (its API twin, with small settings): P3S Points
(positive point on the left twin, negative on the right) -> P3S RNGR Mask -> P3S Inpaint ->
P3S Fine-tune -> P3S Apply with a P3S Schedule -> P3S Attention Maps -> KSampler -> VAE Decode ->
P3S Attention Overlays. It lists the written images and the trained P3S model file.

No weights can be downloaded here. When the demo's ``models/checkpoints`` or ``models/clip_vision``
has no model, it writes a stand-in with the real shapes there once, under the real model's file name
(devtools/standin_models.py; its metadata marks it as a stand-in):
a random-weight SD1.5 checkpoint (2.1 GB, about a minute) and a CLIP ViT-L/14 vision model whose
weights are built for colour scenes like the sample. With stand-ins the masks are right but the
generated images, losses and attention maps are noise: replace them with the real files.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from devtools.api_client import ComfyClient
from devtools.comfy_host import HOST_DIR, REPO_ROOT, running_server
from devtools.model_files import CHECKPOINT as REAL_CHECKPOINT
from devtools.model_files import CLIP_VISION as REAL_CLIP
from devtools.model_files import DOWNLOADS
from devtools.sample_scene import twin_points_json, write_twin_scene
from devtools.standin_models import is_standin, write_clip_vision_standin, write_sd15_checkpoint_standin
from devtools.workflows import SMALL_PIPELINE, full_pipeline_workflow

PREFIX = "p3s_demo"
P3S_MODEL = f"{PREFIX}/subject.safetensors"


def pick_model(folder: Path, real: str, write_standin: Callable[[Path], Path]) -> tuple[str, bool]:
    """``(file name, is_stand_in)``: the real model ``real`` if present, else another real model file
    there, else the stand-in, written once under the name ``real`` (stand-ins are told apart by their
    metadata, not by name)."""
    folder.mkdir(parents=True, exist_ok=True)
    found = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".ckpt"))
    real_ones = [p.name for p in found if not is_standin(p)]
    if real_ones:
        name = real if real in real_ones else real_ones[0]
        print(f"[demo] {folder.name}: {name}")
        return name, False
    if not (folder / real).exists():
        print(f"[demo] {folder.name}: no model in {folder}; writing the stand-in {real} once ...", flush=True)
        started = time.monotonic()
        write_standin(folder / real)
        print(f"[demo]   written in {time.monotonic() - started:.0f} s")
    else:
        print(f"[demo] {folder.name}: no model in {folder}; using the stand-in {real}")
    return real, True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-dir", type=Path, default=HOST_DIR / "demo", help="ComfyUI base directory")
    parser.add_argument("--output-dir", type=Path, default=REPO_ROOT / "output" / "demo")
    args = parser.parse_args(argv)
    base, output = args.base_dir.resolve(), args.output_dir.resolve()
    output.mkdir(parents=True, exist_ok=True)
    models = base / "models"
    started = time.monotonic()
    clip_name, clip_standin = pick_model(models / "clip_vision", REAL_CLIP, write_clip_vision_standin)
    checkpoint, checkpoint_standin = pick_model(models / "checkpoints", REAL_CHECKPOINT, write_sd15_checkpoint_standin)
    if clip_standin or checkpoint_standin:
        print(
            "[demo] ******** STAND-IN MODELS: THE GENERATED IMAGES ARE NOISE ********\n"
            "       The SD1.5 stand-in has random weights, so the generated images, losses and attention maps\n"
            "       are noise; the CLIP vision stand-in is built for colour scenes like the sample (its masks\n"
            "       are right, real photos need the real model). For real results replace the stand-ins with\n"
            "       the real files of the same names (the demo then uses them):\n"
            f"         {models / 'checkpoints' / REAL_CHECKPOINT}\n           from {DOWNLOADS[REAL_CHECKPOINT][1]}\n"
            f"         {models / 'clip_vision' / REAL_CLIP}\n           from {DOWNLOADS[REAL_CLIP][1]}"
        )
    scene = write_twin_scene(HOST_DIR / "p3s_twins.png")
    print(
        "[demo] small settings to keep CPU time short: fine-tune {epochs} epochs at {resolution} px "
        "(scope {scope}), {steps} sampling steps at {size} px".format(**SMALL_PIPELINE)
    )
    print("[demo] starting ComfyUI ...", flush=True)
    with running_server(base, extra_args=["--output-directory", str(output)]) as server:
        print(f"[demo] ComfyUI answers at {server.url} after {time.monotonic() - started:.0f} s", flush=True)
        client = ComfyClient(server.url)
        image_name = client.upload_image(scene)
        workflow = full_pipeline_workflow(
            image_name,
            clip_name,
            checkpoint,
            points_json=twin_points_json(),
            save_name=P3S_MODEL,
            overwrite=True,
            prefix=PREFIX,
            **SMALL_PIPELINE,
        )
        queued = time.monotonic()
        result = client.run(workflow, timeout=3600)
        if not result.succeeded:
            print(f"[demo] the workflow failed: {result.error}", file=sys.stderr)
            print(f"[demo] ComfyUI's log: {server.log_path}", file=sys.stderr)
            return 1
        ran = time.monotonic() - queued
        files = [
            output / record.get("subfolder", "") / record["filename"]
            for _, record in result.output_files()
            if record.get("type") == "output"
        ]
    print(f"[demo] the workflow ran in {ran:.0f} s ({time.monotonic() - started:.0f} s in all); outputs:")
    for path in sorted(files):
        print(f"  {path}")
    print(f"[demo] the trained P3S model: {models / 'p3s' / P3S_MODEL}")
    if clip_standin or checkpoint_standin:
        print("[demo] (made with stand-in models: the generated images are noise, see above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
