"""Shared test set-up: the repository root on sys.path, so ``p3s_core`` and ``devtools`` import."""

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture
def comfy_tmp_dirs(tmp_path, monkeypatch):
    """ComfyUI imported in-process, its temp and models folders in ``tmp_path`` (restored after).

    Model folder registrations are a copy without ``p3s`` and ``p3s_eval``, so each test starts as a fresh ComfyUI
    and changes to them do not leak into other tests.
    """
    from devtools.comfy_inprocess import import_comfy

    import_comfy()
    import folder_paths

    dirs = {"temp": tmp_path / "temp", "models": tmp_path / "models"}
    for folder in dirs.values():
        folder.mkdir()
    monkeypatch.setattr(folder_paths, "temp_directory", str(dirs["temp"]))
    monkeypatch.setattr(folder_paths, "models_dir", str(dirs["models"]))
    fresh = {key: (list(paths), exts) for key, (paths, exts) in folder_paths.folder_names_and_paths.items()}
    fresh.pop("p3s", None)
    fresh.pop("p3s_eval", None)
    monkeypatch.setattr(folder_paths, "folder_names_and_paths", fresh)
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    return {name: str(folder) for name, folder in dirs.items()}
