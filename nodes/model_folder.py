"""The pack's model folders: ``models/p3s`` (P3S models) and ``models/p3s_eval`` (the scoring
backbones), each plus any entries of the same name in extra_model_paths.yaml."""

from __future__ import annotations

import os

import folder_paths

from ..p3s_core.model.model_file import EXTENSION
from ..p3s_core.scoring.protocol import EVAL_FOLDER, WEIGHT_EXTENSIONS

P3S_FOLDER = "p3s"
P3S_EVAL_FOLDER = EVAL_FOLDER


def _register(folder: str, extensions: set[str]) -> list[str]:
    """Register ``folder`` with ComfyUI (idempotent); returns its search paths.

    ComfyUI reads extra_model_paths.yaml before it loads custom nodes, so an entry there already
    exists (with every extension allowed): its paths are kept, first, and the default
    ``models/<folder>`` is added after them. Only files with ``extensions`` are listed.
    """
    default = os.path.join(folder_paths.models_dir, folder)
    existing = folder_paths.folder_names_and_paths.get(folder)
    paths = list(existing[0]) if existing else []
    if default not in paths:
        paths.append(default)
    entry = (paths, set(extensions))
    if existing is None or list(existing[0]) != paths or set(existing[1]) != extensions:
        folder_paths.folder_names_and_paths[folder] = entry
        folder_paths.filename_list_cache.pop(folder, None)
    return folder_paths.get_folder_paths(folder)


def register_p3s_folder() -> list[str]:
    """Register ``models/p3s``; only ``.safetensors`` files are listed."""
    return _register(P3S_FOLDER, {EXTENSION})


def register_eval_folder() -> list[str]:
    """Register ``models/p3s_eval`` (CLIP ViT-B/32 and DINO ViT-S/16 for P3S Subject Score);
    ``.safetensors`` and ``.bin`` files are listed, sub-folders (Hugging Face snapshots) included."""
    return _register(P3S_EVAL_FOLDER, set(WEIGHT_EXTENSIONS))
