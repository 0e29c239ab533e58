"""Import single modules of the pack (e.g. ``nodes.p3s_patching``) without its ``__init__``s.

The pack's root ``__init__`` and ``nodes/__init__`` import every node module; tests and
benchmarks that need only a few create the two packages as bare module objects, then import
submodules through them, so relative imports inside the pack work.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

from devtools.comfy_inprocess import import_comfy

REPO_ROOT = Path(__file__).resolve().parent.parent
PACK = "p3s_pack_modules"


def pack_module(name: str) -> types.ModuleType:
    """Import ``<pack>.<name>`` after ComfyUI, without running the pack's package ``__init__``s."""
    import_comfy()
    for package, folder in ((PACK, REPO_ROOT), (f"{PACK}.nodes", REPO_ROOT / "nodes")):
        if package not in sys.modules:
            module = types.ModuleType(package)
            module.__path__ = [str(folder)]
            sys.modules[package] = module
    return importlib.import_module(f"{PACK}.{name}")
