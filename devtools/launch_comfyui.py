"""Start ComfyUI's ``main.py`` on a CPU-only torch, with torchvision's missing ops declared.

PyPI's Linux torchvision wheel is a CUDA build; beside the CPU torch wheel it fails to
import with "operator torchvision::nms does not exist". ComfyUI imports torchvision at
start-up, so this launcher declares the two operator schemas first (no kernels: nothing in
the pack or in the tests calls them) and then runs ``main.py`` as ``__main__``.

Usage: ``python launch_comfyui.py COMFYUI_DIR [main.py arguments...]``
"""

from __future__ import annotations

import os
import runpy
import sys


def declare_torchvision_ops() -> None:
    """Declare ``torchvision::nms``/``qnms`` when torchvision cannot register them itself."""
    import torch

    try:
        torch.ops.torchvision.nms  # noqa: B018 - probing the op registry
        return
    except (AttributeError, RuntimeError):
        pass
    try:
        import torchvision  # noqa: F401

        return
    except RuntimeError:
        # The failed import left torchvision half-initialised in sys.modules.
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    # Keep the library object alive for the life of the process.
    sys.modules[__name__].__dict__["_torchvision_shim"] = lib


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: launch_comfyui.py COMFYUI_DIR [main.py arguments...]")
    comfy_dir = os.path.abspath(argv[0])
    declare_torchvision_ops()
    os.chdir(comfy_dir)
    sys.path.insert(0, comfy_dir)
    sys.argv = [os.path.join(comfy_dir, "main.py"), *argv[1:]]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
