"""Import the pack the way ComfyUI does (as a package with relative imports), for tests and benchmarks.

ComfyUI has its own top-level ``nodes`` module, so the pack's ``nodes`` package is only
reachable as a sub-package of the pack. These helpers load the repository root under a
package name after :func:`devtools.comfy_inprocess.import_comfy`:

* :func:`import_pack` runs the root ``__init__.py`` (the whole pack, ``comfy_entrypoint``);
* :func:`import_pack_module` imports one module (``"nodes.schedule_node"``) without running
  the ``__init__.py`` of the folders above it, to test a node on its own.

Classes and errors come from the pack's copy of ``p3s_core`` (``<package>.p3s_core``), which is
not the ``p3s_core`` that tests import directly: catch ``ValueError`` or take the error class
from the returned module's package (``pack_core(module).errors.P3SInputError``).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from devtools.comfy_inprocess import import_comfy

REPO_ROOT = Path(__file__).resolve().parent.parent
PACK_NAME = "p3s_pack"
PARTS_NAME = "p3s_pack_parts"


def import_pack() -> ModuleType:
    """The whole pack as package ``p3s_pack`` (its root ``__init__.py`` executed)."""
    import_comfy()
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    spec = importlib.util.spec_from_file_location(
        PACK_NAME, REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[PACK_NAME]
        raise
    return module


def import_pack_module(relative: str) -> ModuleType:
    """One module of the pack, e.g. ``"nodes.loader_node"``, under package ``p3s_pack_parts``."""
    import_comfy()
    parts = relative.split(".")
    for depth in range(len(parts)):
        name = ".".join([PARTS_NAME, *parts[:depth]])
        if name not in sys.modules:
            folder = REPO_ROOT.joinpath(*parts[:depth])
            spec = importlib.util.spec_from_loader(name, loader=None, is_package=True)
            spec.submodule_search_locations = [str(folder)]
            sys.modules[name] = importlib.util.module_from_spec(spec)
            if depth:  # as an import does: the parent package names its sub-package
                setattr(sys.modules[name.rsplit(".", 1)[0]], parts[depth - 1], sys.modules[name])
    return importlib.import_module(f"{PARTS_NAME}.{relative}")


def pack_core(module: ModuleType) -> ModuleType:
    """The ``p3s_core`` package that ``module`` (from one of the helpers above) uses."""
    package = module.__name__.split(".", 1)[0]
    return importlib.import_module(f"{package}.p3s_core")
