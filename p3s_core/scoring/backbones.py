"""The protocol's backbones, CLIP ViT-B/32 and DINO ViT-S/16, loaded with ``transformers``.

A backbone is one weights file in the ``p3s_eval`` model folder, either a single file
(``clip-vit-base-patch32.safetensors``: the architecture is read from the tensors' shapes) or a
file of a Hugging Face snapshot folder (``clip-vit-base-patch32/model.safetensors`` next to its
``config.json``: the architecture is the config's). ``.safetensors`` and ``.bin`` (read with
``weights_only``) are accepted. A file that is not the kind of model asked for is refused with the
pack's error; a model of the right kind but another size loads and is labelled "not the
protocol's backbone" in every report.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import P3SInputError
from ..validation import excerpt, model_file_name
from .protocol import (
    CLIP_B32,
    CLIP_B32_SHAPE,
    CLIP_MAX_TOKENS,
    DINO_LAYER_NORM_EPS,
    DINO_S16,
    DINO_S16_SHAPE,
    EVAL_FOLDER,
    HEAD_DIM,
    Backbone,
)

TOKENIZER_FILES = ("vocab.json", "merges.txt")
_IGNORED_KEYS = re.compile(r"(^|\.)position_ids$|^pooler\.")


def _download_hint(backbone: Backbone) -> str:
    return (
        f"{backbone.label} ({backbone.hf_repo}): download {backbone.url} and save it as "
        f"{EVAL_FOLDER}/{backbone.file_name}, or put the repository's files (config.json, model.safetensors) "
        f"in {EVAL_FOLDER}/{backbone.file_name.rsplit('.', 1)[0]}/"
    )


def resolve_backbone_file(folders: Iterable[str | Path], name: str, backbone: Backbone, input_name: str) -> Path:
    """The weights file ``name`` inside one of ``folders`` (the first that has it), else the pack's error
    naming the folder, the expected files and where to download them. Never names a server path."""
    roots = [Path(folder) for folder in folders]
    extension = ".bin" if isinstance(name, str) and name.lower().endswith(".bin") else ".safetensors"
    relative = Path(model_file_name(name, input_name, extension))
    for root in roots:
        candidate = root / relative
        if candidate.is_file():
            return candidate
    raise P3SInputError(
        f"{input_name}: no file {excerpt(name)} in models/{EVAL_FOLDER} (or a '{EVAL_FOLDER}' entry of "
        f"extra_model_paths.yaml). Expected {_download_hint(backbone)}. Then refresh the list (R)."
    )


def read_state_dict(path: Path, input_name: str) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` or ``.bin`` file; a broken file gives the pack's error."""
    try:
        if path.suffix.lower() == ".bin":
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            from safetensors.torch import load_file

            state = load_file(str(path))
    except Exception as error:
        raise P3SInputError(
            f"{input_name}: {path.name!r} cannot be read as model weights ({type(error).__name__}): "
            "the download may be incomplete; download it again."
        ) from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise P3SInputError(f"{input_name}: {path.name!r} holds no plain tensor dictionary; it is not model weights.")
    return state


def _folder_config(path: Path, kinds: Sequence[str], input_name: str) -> dict[str, Any] | None:
    """The ``config.json`` next to ``path`` (a snapshot folder), checked to be one of ``kinds``; else None."""
    config_file = path.parent / "config.json"
    if not config_file.is_file():
        return None
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as error:
        raise P3SInputError(f"{input_name}: the config.json beside {path.name!r} is not valid JSON.") from error
    if not isinstance(config, dict) or config.get("model_type") not in kinds:
        got = config.get("model_type") if isinstance(config, dict) else None
        raise P3SInputError(
            f"{input_name}: the config.json beside {path.name!r} describes a {got!r} model, not {' or '.join(kinds)}: "
            "this folder holds another model."
        )
    return config


def _need(state: dict[str, torch.Tensor], key: str, what: str, input_name: str) -> torch.Tensor:
    if key not in state:
        raise P3SInputError(f"{input_name}: this file is not {what} (it has no {key!r}); pick the {what} file.")
    return state[key]


def _layer_count(state: dict[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for key in state if (m := pattern.match(key))}
    return max(indices) + 1 if indices else 0


def _grid_size(positions: int, patch: int) -> int:
    side = math.isqrt(positions - 1)
    return side * patch


def _from_state(model_class, config, state: dict[str, torch.Tensor], what: str, input_name: str, **kwargs):
    """``model_class`` built from ``config`` with the weights ``state``, through ``from_pretrained`` (which
    renames the checkpoint's keys to the installed ``transformers``' own); every parameter must be given
    and nothing foreign may be left over."""
    try:
        model, info = model_class.from_pretrained(
            None, config=config, state_dict=state, output_loading_info=True, **kwargs
        )
    except (RuntimeError, ValueError) as error:  # shape mismatches
        raise P3SInputError(
            f"{input_name}: this file's tensors do not fit {what} ({str(error).splitlines()[0][:160]})."
        ) from error
    missing = sorted(k for k in info["missing_keys"] if not _IGNORED_KEYS.search(k))
    unexpected = sorted(k for k in info["unexpected_keys"] if not _IGNORED_KEYS.search(k))
    if missing or unexpected:
        shown = (missing or unexpected)[:3]
        kind = "lacks" if missing else "has foreign tensors"
        raise P3SInputError(f"{input_name}: this file is not {what}: it {kind} {shown}; pick the {what} file.")
    return model


@dataclass
class ClipBackbone:
    """A CLIP model and its tokenizer: projected image and text embeddings."""

    model: Any
    tokenizer: Any
    label: str
    is_protocol: bool
    source: str

    def to(self, device: torch.device | str) -> ClipBackbone:
        self.model.to(device)
        return self

    @torch.no_grad()
    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[N, 3, 224, 224]`` normalised pixels to ``[N, D]`` image embeddings (``visual_projection``)."""
        device = next(self.model.parameters()).device
        pooled = self.model.vision_model(pixel_values=pixels.to(device)).pooler_output
        return self.model.visual_projection(pooled).float().cpu()

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts (cut at 77 tokens) to ``[N, D]`` text embeddings (``text_projection``)."""
        device = next(self.model.parameters()).device
        tokens = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=CLIP_MAX_TOKENS, return_tensors="pt"
        )
        pooled = self.model.text_model(
            input_ids=tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device)
        ).pooler_output
        return self.model.text_projection(pooled).float().cpu()


@dataclass
class DinoBackbone:
    """A DINO ViT: the CLS token of the last layer after the final LayerNorm."""

    model: Any
    label: str
    is_protocol: bool
    source: str

    def to(self, device: torch.device | str) -> DinoBackbone:
        self.model.to(device)
        return self

    @torch.no_grad()
    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[N, 3, 224, 224]`` normalised pixels to ``[N, D]`` CLS embeddings."""
        device = next(self.model.parameters()).device
        return self.model(pixel_values=pixels.to(device)).last_hidden_state[:, 0].float().cpu()


def _clip_config_from_state(state: dict[str, torch.Tensor], input_name: str) -> dict[str, Any]:
    what = "a CLIP model (text and vision)"
    vision_hidden = _need(state, "vision_model.embeddings.class_embedding", what, input_name).shape[0]
    patch = _need(state, "vision_model.embeddings.patch_embedding.weight", what, input_name).shape[-1]
    positions = _need(state, "vision_model.embeddings.position_embedding.weight", what, input_name).shape[0]
    vocab, text_hidden = _need(state, "text_model.embeddings.token_embedding.weight", what, input_name).shape
    text_positions = _need(state, "text_model.embeddings.position_embedding.weight", what, input_name).shape[0]
    projection = _need(state, "visual_projection.weight", what, input_name).shape[0]
    vision_mlp = _need(state, "vision_model.encoder.layers.0.mlp.fc1.weight", what, input_name).shape[0]
    text_mlp = _need(state, "text_model.encoder.layers.0.mlp.fc1.weight", what, input_name).shape[0]
    return {
        "model_type": "clip",
        "projection_dim": projection,
        "text_config": {
            "vocab_size": vocab,
            "hidden_size": text_hidden,
            "intermediate_size": text_mlp,
            "num_hidden_layers": _layer_count(state, "text_model.encoder.layers."),
            "num_attention_heads": max(1, text_hidden // HEAD_DIM),
            "max_position_embeddings": text_positions,
            "hidden_act": "quick_gelu",  # OpenAI's CLIP; a state dict cannot say
            "eos_token_id": 49407,
        },
        "vision_config": {
            "hidden_size": vision_hidden,
            "intermediate_size": vision_mlp,
            "num_hidden_layers": _layer_count(state, "vision_model.encoder.layers."),
            "num_attention_heads": max(1, vision_hidden // HEAD_DIM),
            "patch_size": patch,
            "image_size": _grid_size(positions, patch),
            "hidden_act": "quick_gelu",
        },
    }


def _find_tokenizer_dir(path: Path, fallback: str | Path | None) -> Path:
    for folder in (path.parent, Path(fallback) if fallback else None):
        if folder is not None and all((folder / name).is_file() for name in TOKENIZER_FILES):
            return folder
    raise P3SInputError(
        "CLIP-T needs CLIP's tokenizer: put vocab.json and merges.txt (from openai/clip-vit-base-patch32) "
        f"beside the CLIP model in models/{EVAL_FOLDER}."
    )


def load_clip(
    path: str | Path, tokenizer_dir: str | Path | None = None, input_name: str = "clip_model"
) -> ClipBackbone:
    """CLIP (``CLIPModel``) from ``path``, float32 on the CPU, in eval mode.

    The tokenizer is read from the model's folder when ``vocab.json`` and ``merges.txt`` are there,
    else from ``tokenizer_dir`` (ComfyUI's ``comfy/sd1_tokenizer`` is OpenAI CLIP's BPE, the same for
    every OpenAI CLIP size).
    """
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    path = Path(path)
    tokenizer_folder = _find_tokenizer_dir(path, tokenizer_dir)
    state = read_state_dict(path, input_name)
    config_dict = _folder_config(path, ("clip",), input_name) or _clip_config_from_state(state, input_name)
    config = CLIPConfig.from_dict(config_dict)
    model = _from_state(CLIPModel, config, state, "a CLIP model (text and vision)", input_name).float().eval()
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_folder))
    vision = config.vision_config
    shape = {
        "vision_hidden": vision.hidden_size,
        "vision_layers": vision.num_hidden_layers,
        "patch": vision.patch_size,
        "image": vision.image_size,
        "text_hidden": config.text_config.hidden_size,
    }
    is_protocol = shape == CLIP_B32_SHAPE
    label = CLIP_B32.label if is_protocol else f"CLIP ViT width {vision.hidden_size}/{vision.patch_size} px patches"
    return ClipBackbone(model, tokenizer, label, is_protocol, path.name)


def _dino_config_from_state(state: dict[str, torch.Tensor], input_name: str) -> dict[str, Any]:
    what = "a DINO ViT"
    hidden = _need(state, "embeddings.cls_token", what, input_name).shape[-1]
    patch = _need(state, "embeddings.patch_embeddings.projection.weight", what, input_name).shape[-1]
    positions = _need(state, "embeddings.position_embeddings", what, input_name).shape[1]
    mlp = _need(state, "encoder.layer.0.intermediate.dense.weight", what, input_name).shape[0]
    return {
        "model_type": "vit",
        "hidden_size": hidden,
        "num_hidden_layers": _layer_count(state, "encoder.layer."),
        "num_attention_heads": max(1, hidden // HEAD_DIM),
        "intermediate_size": mlp,
        "patch_size": patch,
        "image_size": _grid_size(positions, patch),
        "qkv_bias": "encoder.layer.0.attention.attention.query.bias" in state,
        "hidden_act": "gelu",
    }


def load_dino(path: str | Path, input_name: str = "dino_model") -> DinoBackbone:
    """DINO (``ViTModel`` without pooler) from ``path``, float32 on the CPU, in eval mode, with DINO's
    own LayerNorm epsilon (:data:`~.protocol.DINO_LAYER_NORM_EPS`)."""
    from transformers import ViTConfig, ViTModel

    path = Path(path)
    state = read_state_dict(path, input_name)
    config_dict = _folder_config(path, ("vit", "dino"), input_name)
    if config_dict is None:
        config_dict = _dino_config_from_state({k.removeprefix("vit."): v for k, v in state.items()}, input_name)
    config = ViTConfig.from_dict({**config_dict, "model_type": "vit", "layer_norm_eps": DINO_LAYER_NORM_EPS})
    model = _from_state(ViTModel, config, state, "a DINO ViT", input_name, add_pooling_layer=False).float().eval()
    shape = {
        "hidden": config.hidden_size,
        "layers": config.num_hidden_layers,
        "patch": config.patch_size,
        "image": config.image_size,
    }
    is_protocol = shape == DINO_S16_SHAPE
    label = DINO_S16.label if is_protocol else f"DINO ViT width {config.hidden_size}/{config.patch_size} px patches"
    return DinoBackbone(model, label, is_protocol, path.name)
