"""pytest plugin: collect the repository root as a plain folder, not as a Python package.

The root is the pack's package (ComfyUI imports ``__init__.py`` from ``custom_nodes/``), and
that ``__init__`` needs ComfyUI. pytest would import it to set up a Package; tests import
``p3s_core`` and, where they need nodes, load the pack after ComfyUI (devtools/pack_modules.py).
"""

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_collect_directory(path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if path == REPO_ROOT:
        return pytest.Dir.from_parent(parent, path=path)
    return None
