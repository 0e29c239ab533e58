"""Tiny randomly initialised CLIP and DINO models for the scoring tests (a few MB, built from
``transformers`` configs), written as a single file or as a Hugging Face snapshot folder.

They have the protocol's input sizes (224 px, patches of 32 and 16) and one layer of width 64, so
the real loading and embedding code runs on them in well under a second. Call
``devtools.launch_comfyui.declare_torchvision_ops()`` first where torchvision is broken.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from pathlib import Path

import torch

from devtools.comfy_host import comfyui_dir

WIDTH = 64
TOKENIZER_FILES = ("vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json")


def comfy_tokenizer_dir() -> Path:
    """ComfyUI's OpenAI CLIP tokenizer files."""
    return comfyui_dir() / "comfy" / "sd1_tokenizer"


def tiny_clip(seed: int = 0):
    """A ``CLIPModel`` with CLIP's vocabulary and 224 px / 32 px patches, one layer of width 64."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(
        projection_dim=32,
        text_config={
            "vocab_size": 49408,
            "hidden_size": WIDTH,
            "intermediate_size": 2 * WIDTH,
            "num_hidden_layers": 1,
            "num_attention_heads": 1,
            "max_position_embeddings": 77,
            "hidden_act": "quick_gelu",
            "eos_token_id": 49407,
        },
        vision_config={
            "hidden_size": WIDTH,
            "intermediate_size": 2 * WIDTH,
            "num_hidden_layers": 1,
            "num_attention_heads": 1,
            "patch_size": 32,
            "image_size": 224,
            "hidden_act": "quick_gelu",
        },
    )
    return CLIPModel(config).eval()


def tiny_dino(seed: int = 0):
    """A ``ViTModel`` (no pooler) with 224 px / 16 px patches, one layer of width 64."""
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(seed)
    config = ViTConfig(
        hidden_size=WIDTH,
        num_hidden_layers=1,
        num_attention_heads=1,
        intermediate_size=2 * WIDTH,
        patch_size=16,
        image_size=224,
        qkv_bias=True,
        layer_norm_eps=1e-6,
    )
    return ViTModel(config, add_pooling_layer=False).eval()


def write_single_file(model, path: Path) -> Path:
    """``model``'s weights as one fp16 ``.safetensors`` file (the frontend-download layout), with the
    checkpoint's key names as ``save_pretrained`` writes them (the released files' names)."""
    with tempfile.TemporaryDirectory() as folder:
        copy.deepcopy(model).half().save_pretrained(folder)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(folder) / "model.safetensors", path)
    return path


def write_snapshot(model, folder: Path, tokenizer: bool = False) -> Path:
    """``model`` as a Hugging Face snapshot (``config.json``, ``model.safetensors``); returns the weights file."""
    folder.mkdir(parents=True, exist_ok=True)
    copy.deepcopy(model).half().save_pretrained(str(folder))
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text())
    if config.get("model_type") == "vit":  # as the Hub's converted DINO configs say (DINO itself: 1e-6)
        config_file.write_text(json.dumps({**config, "layer_norm_eps": 1e-12}, indent=2))
    if tokenizer:
        for name in TOKENIZER_FILES:
            shutil.copy(comfy_tokenizer_dir() / name, folder / name)
    return folder / "model.safetensors"


def fp16_exact(model):
    """Round ``model``'s weights to fp16 in place, so a model loaded from the fp16 files equals it."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.copy_(tensor.to(torch.float16).to(tensor.dtype))
    return model


def write_tiny_eval_set(root: Path) -> dict:
    """Both tiny backbones under ``root`` under the protocol's file names, as single files and as
    snapshot folders; returns the models and the paths."""
    clip, dino = fp16_exact(tiny_clip(seed=1)), fp16_exact(tiny_dino(seed=2))
    return {
        "root": root,
        "clip": clip,
        "dino": dino,
        "clip_file": write_single_file(clip, root / "clip-vit-base-patch32.safetensors"),
        "dino_file": write_single_file(dino, root / "dino-vits16.safetensors"),
        "clip_snapshot": write_snapshot(clip, root / "clip-vit-base-patch32", tokenizer=True),
        "dino_snapshot": write_snapshot(dino, root / "dino-vits16"),
    }
