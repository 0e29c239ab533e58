"""Stand-in model files with real shapes, for tests and the demo (no weights can be downloaded).

``write_clip_vision_standin`` writes a CLIP ViT-L/14 vision model in the transformers key
layout that ComfyUI's ``CLIPVisionLoader`` detects. Its weights are not random but built so
the result is predictable: every transformer layer is an identity (zero attention and MLP
outputs), so a patch token is its patch embedding, the patch's mean colour, plus a smooth code
of its position. Patches of the same colour are alike, closer ones more alike, much as CLIP's
tokens carry content and position. Results are meaningful only for such colour scenes; place
the real ``clip-vit-large-patch14`` in ``models/clip_vision`` for real photos.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

VIT_L14 = {"hidden": 1024, "layers": 24, "intermediate": 4096, "patch": 14, "image": 224, "projection": 768}
COLOUR_GAIN = 4.0
POSITION_GAIN = 0.6


def clip_vision_standin_state_dict(dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """The stand-in's tensors under ComfyUI's CLIP vision key names."""
    hidden, patch = VIT_L14["hidden"], VIT_L14["patch"]
    grid = VIT_L14["image"] // patch
    sd: dict[str, torch.Tensor] = {}
    embed = torch.zeros(hidden, 3, patch, patch)
    for channel in range(3):
        embed[channel, channel] = COLOUR_GAIN / (patch * patch)
    sd["vision_model.embeddings.patch_embedding.weight"] = embed
    sd["vision_model.embeddings.class_embedding"] = torch.zeros(hidden)
    position = torch.zeros(grid * grid + 1, hidden)
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    codes = []
    for freq in (math.pi / grid, 2 * math.pi / grid):
        codes += [
            torch.sin(rows * freq),
            torch.cos(rows * freq),
            torch.sin(cols * freq),
            torch.cos(cols * freq),
        ]
    position[1:, 8 : 8 + len(codes)] = torch.stack(codes, dim=-1).reshape(grid * grid, -1) * POSITION_GAIN
    sd["vision_model.embeddings.position_embedding.weight"] = position
    for norm in ("vision_model.pre_layrnorm", "vision_model.post_layernorm"):
        sd[f"{norm}.weight"] = torch.ones(hidden)
        sd[f"{norm}.bias"] = torch.zeros(hidden)
    for i in range(VIT_L14["layers"]):
        prefix = f"vision_model.encoder.layers.{i}"
        for norm in ("layer_norm1", "layer_norm2"):
            sd[f"{prefix}.{norm}.weight"] = torch.ones(hidden)
            sd[f"{prefix}.{norm}.bias"] = torch.zeros(hidden)
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            sd[f"{prefix}.self_attn.{proj}.weight"] = torch.zeros(hidden, hidden)
            sd[f"{prefix}.self_attn.{proj}.bias"] = torch.zeros(hidden)
        sd[f"{prefix}.mlp.fc1.weight"] = torch.zeros(VIT_L14["intermediate"], hidden)
        sd[f"{prefix}.mlp.fc1.bias"] = torch.zeros(VIT_L14["intermediate"])
        sd[f"{prefix}.mlp.fc2.weight"] = torch.zeros(hidden, VIT_L14["intermediate"])
        sd[f"{prefix}.mlp.fc2.bias"] = torch.zeros(hidden)
    sd["visual_projection.weight"] = torch.zeros(VIT_L14["projection"], hidden)
    return {key: value.to(dtype).contiguous() for key, value in sd.items()}


def write_clip_vision_standin(path: Path) -> Path:
    """Write the stand-in to ``path`` (atomically) unless it exists; return the path."""
    path = Path(path)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    save_file(clip_vision_standin_state_dict(), str(partial), metadata={"p3s.standin": "clip_vision_vit_l14"})
    os.replace(partial, path)
    return path
