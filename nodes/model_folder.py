"""The ``p3s`` model folder: ``models/p3s`` plus any ``p3s:`` entries of extra_model_paths.yaml."""

from __future__ import annotations

import os

import folder_paths

from ..p3s_core.model.model_file import EXTENSION

P3S_FOLDER = "p3s"


def register_p3s_folder() -> list[str]:
    """Register the ``p3s`` folder with ComfyUI (idempotent); returns its search paths.

    ComfyUI reads extra_model_paths.yaml before it loads custom nodes, so a ``p3s:`` entry there
    already exists (with every extension allowed): its paths are kept, first, and the default
    ``models/p3s`` is added after them. Only ``.safetensors`` files are listed.
    """
    default = os.path.join(folder_paths.models_dir, P3S_FOLDER)
    existing = folder_paths.folder_names_and_paths.get(P3S_FOLDER)
    paths = list(existing[0]) if existing else []
    if default not in paths:
        paths.append(default)
    entry = (paths, {EXTENSION})
    if existing is None or list(existing[0]) != paths or set(existing[1]) != {EXTENSION}:
        folder_paths.folder_names_and_paths[P3S_FOLDER] = entry
        folder_paths.filename_list_cache.pop(P3S_FOLDER, None)
    return folder_paths.get_folder_paths(P3S_FOLDER)
