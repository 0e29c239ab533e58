"""Import the host's ComfyUI modules into this Python process (CPU only), for tests.

Tests that exercise model patching or loaders call :func:`import_comfy` first; it declares
torchvision's missing ops (see ``launch_comfyui.py``), puts the ComfyUI code on ``sys.path``
and forces ComfyUI's CPU mode before ``comfy.model_management`` is imported.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

from devtools.comfy_host import comfyui_dir
from devtools.launch_comfyui import declare_torchvision_ops


def import_comfy() -> ModuleType:
    """Return the ``comfy`` package of the host ComfyUI, set up for CPU use."""
    root = comfyui_dir()
    if not (root / "main.py").is_file():
        raise RuntimeError(f"No ComfyUI at {root}: run `bash devtools/bootstrap.sh` first.")
    declare_torchvision_ops()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import comfy.cli_args

    # As ComfyUI's main.py: its ``utils`` package before ComfyUI's nodes.py puts ``comfy/`` first on
    # sys.path (after which ``import utils`` would find ``comfy/utils.py``).
    import utils.extra_config  # noqa: F401

    comfy.cli_args.args.cpu = True
    comfy.cli_args.args.disable_all_custom_nodes = True
    import comfy
    import comfy.model_management

    return comfy


def comfy_root() -> Path:
    """The folder of the ComfyUI code that :func:`import_comfy` uses."""
    return comfyui_dir()
