"""The model files the examples name: the standard file names ComfyUI users have, where they go and
where to download them (what the examples' loader nodes carry in ``properties.models``, so the
frontend offers the download), and where the tests and tools keep their stand-ins."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = "v1-5-pruned-emaonly.safetensors"
CLIP_VISION = "clip-vit-large-patch14.safetensors"
SDXL_CHECKPOINT = "sd_xl_base_1.0.safetensors"
# name -> (models/ folder, official download URL). The frontend saves the download under the name.
DOWNLOADS = {
    CHECKPOINT: (
        "checkpoints",
        "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/v1-5-pruned-emaonly.safetensors",
    ),
    SDXL_CHECKPOINT: (
        "checkpoints",
        "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors",
    ),
    CLIP_VISION: ("clip_vision", "https://huggingface.co/openai/clip-vit-large-patch14/resolve/main/model.safetensors"),
}
# Stand-ins with the real shapes under the standard names, written once (devtools/standin_models.py).
MODEL_CACHE = Path(os.environ.get("P3S_TEST_MODEL_CACHE", REPO_ROOT / ".host" / "models"))


def download_entry(name: str) -> dict[str, str]:
    """``{name, url, directory}``: one entry of a loader node's ``properties.models``."""
    directory, url = DOWNLOADS[name]
    return {"name": name, "url": url, "directory": directory}


def standin_paths(sdxl: bool = False) -> dict[str, Path]:
    """``{"checkpoints": path, "clip_vision": path}`` of the cached stand-ins, written when absent
    (the SD1.5 one takes about a minute and 2.1 GB once); with ``sdxl``, the SDXL checkpoint's
    stand-in as well (``"checkpoints_sdxl"``: 2.4 GB once)."""
    from devtools.standin_models import (
        write_clip_vision_standin,
        write_sd15_checkpoint_standin,
        write_sdxl_checkpoint_standin,
    )

    paths = {
        "clip_vision": write_clip_vision_standin(MODEL_CACHE / "clip_vision" / CLIP_VISION),
        "checkpoints": write_sd15_checkpoint_standin(MODEL_CACHE / "checkpoints" / CHECKPOINT),
    }
    if sdxl:
        paths["checkpoints_sdxl"] = write_sdxl_checkpoint_standin(MODEL_CACHE / "checkpoints" / SDXL_CHECKPOINT)
    return paths


def link_standins(base_dir: Path, sdxl: bool = False) -> dict[str, Path]:
    """Link the cached stand-ins into a ComfyUI base directory's model folders under the standard names
    (keys as :func:`standin_paths`)."""
    links = {}
    for key, source in standin_paths(sdxl).items():
        link = base_dir / "models" / DOWNLOADS[source.name][0] / source.name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(source)
        links[key] = link
    return links


def link_memory_probe(base_dir: Path) -> Path:
    """Link the test-only tensor-bytes probe node (``devtools/memory_probe``) into ``custom_nodes``."""
    link = base_dir / "custom_nodes" / "devtools_memory_probe"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(Path(__file__).resolve().parent / "memory_probe", target_is_directory=True)
    return link


def link_batch_probe(base_dir: Path) -> Path:
    """Link the test-only slow-image node (``devtools/batch_probe``) into ``custom_nodes``."""
    link = base_dir / "custom_nodes" / "devtools_batch_probe"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(Path(__file__).resolve().parent / "batch_probe", target_is_directory=True)
    return link
