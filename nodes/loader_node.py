"""``P3S Loader``: a trained P3S model file from the ``p3s`` model folder."""

from __future__ import annotations

import json

import folder_paths
from comfy_api.latest import io

from ..p3s_core.bases.registry import BASES
from ..p3s_core.errors import P3SInputError
from ..p3s_core.model.model_file import P3SModelFile, load_p3s_model, resolve_model_path
from ..p3s_core.validation import bounded
from .model_folder import P3S_FOLDER, register_p3s_folder
from .types import CATEGORY_MODEL, P3SModelType


class P3SLoaderNode(io.ComfyNode):
    """Loads a ``.safetensors`` P3S model saved by the pack, refusing foreign or broken files."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        register_p3s_folder()
        return io.Schema(
            node_id="P3SLoader",
            display_name="P3S Loader",
            category=CATEGORY_MODEL,
            description="Load a trained P3S subject model from models/p3s (or a 'p3s' folder set in "
            "extra_model_paths.yaml).",
            inputs=[
                io.Combo.Input(
                    "model_name",
                    options=folder_paths.get_filename_list(P3S_FOLDER),
                    tooltip="A .safetensors file saved by P3S (press R to refresh the list after adding "
                    "files). LoRAs and checkpoints are not P3S models.",
                ),
            ],
            outputs=[
                P3SModelType.Output("p3s_model", tooltip="The learned subject; connect to P3S Apply."),
                io.String.Output("info", tooltip="Format, base model, structure and training settings (JSON)."),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, model_name: str) -> str:
        """Reload when the file changes on disk, not only when another name is picked."""
        try:
            stat = resolve_model_path(folder_paths.get_folder_paths(P3S_FOLDER), model_name).stat()
        except (P3SInputError, OSError):
            return model_name
        return f"{model_name}:{stat.st_mtime_ns}:{stat.st_size}"

    @classmethod
    def execute(cls, model_name: str) -> io.NodeOutput:
        path = resolve_model_path(folder_paths.get_folder_paths(P3S_FOLDER), model_name)
        # Any supported base: the file meets its MODEL in P3S Apply / Fine-tune, which refuse another base's.
        tensors, info = load_p3s_model(path, expected_base=None)
        if info.base not in BASES:
            raise P3SInputError(
                f"{model_name} was trained on base model {info.base!r}; this pack supports {', '.join(BASES)}."
            )
        summary = {
            "name": model_name,
            "format_version": info.format_version,
            "base": info.base,
            "dtype": info.dtype,
            "scope": info.scope,
            "base_fingerprint": info.base_fingerprint,
            "resume": info.resume,
            "tensors": len(tensors),
            "parameters": sum(t.numel() for t in tensors.values()),
            "config": bounded(info.config),
            "training": bounded(info.training),
        }
        return io.NodeOutput(P3SModelFile(tensors, info, name=model_name), json.dumps(summary, indent=2))
