"""ComfyUI servers for the batch tool's tests and benchmark: what ``p3s-batch --launch`` needs here.

:func:`launch_spec` builds a :class:`~p3s_batch.comfy_process.LaunchSpec` for the bundled
ComfyUI (through devtools/launch_comfyui.py, the CPU torch's torchvision shim) with a
``custom_nodes`` folder holding this pack and the test-only slow-image node, and a ``models``
folder with the stand-in models (the selection workflow's CLIP vision) when asked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devtools.comfy_host import PACK_LINK_NAME, REPO_ROOT, comfyui_dir
from devtools.model_files import CLIP_VISION, MODEL_CACHE
from p3s_batch.comfy_process import LaunchSpec

SLOW_NODE, SAVE_NODE = "1", "2"


def slow_workflow(seconds: float = 0.3) -> dict[str, Any]:
    """Slow Image (devtools) -> SaveImage: an item's ``1.seconds``, ``1.level``, ``1.fail`` vary it."""
    return {
        SLOW_NODE: {
            "class_type": "DevtoolsSlowImage",
            "inputs": {"seconds": seconds, "level": 0.5, "label": "item", "fail": False},
        },
        SAVE_NODE: {"class_type": "SaveImage", "inputs": {"images": [SLOW_NODE, 0], "filename_prefix": "batch"}},
    }


def launch_spec(folder: Path, clip_vision: bool = False, pack: bool = True) -> LaunchSpec:
    """Folders under ``folder`` for launched test servers: custom_nodes (the pack unless ``pack`` is
    false, the slow-image node), models (the CLIP vision stand-in with ``clip_vision``)."""
    nodes, models = folder / "custom_nodes", folder / "models"
    nodes.mkdir(parents=True, exist_ok=True)
    (models / "clip_vision").mkdir(parents=True, exist_ok=True)
    links = [("devtools_batch_probe", REPO_ROOT / "devtools" / "batch_probe")]
    if pack:
        links.append((PACK_LINK_NAME, REPO_ROOT))
    for name, target in links:
        if not (nodes / name).exists():
            (nodes / name).symlink_to(target, target_is_directory=True)
    if clip_vision:
        from devtools.standin_models import write_clip_vision_standin

        source = write_clip_vision_standin(MODEL_CACHE / "clip_vision" / CLIP_VISION)
        if not (models / "clip_vision" / CLIP_VISION).exists():
            (models / "clip_vision" / CLIP_VISION).symlink_to(source)
    return LaunchSpec(
        comfyui=str(comfyui_dir()),
        models=str(models),
        custom_nodes=str(nodes),
        launcher=str(REPO_ROOT / "devtools" / "launch_comfyui.py"),
        extra_args=["--database-url", "sqlite:///:memory:"],
    )
