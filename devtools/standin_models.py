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
from safetensors import safe_open
from safetensors.torch import save_file

STANDIN_KEY = "p3s.standin"  # safetensors metadata key that marks a stand-in, whatever its file name
VIT_L14 = {"hidden": 1024, "layers": 24, "intermediate": 4096, "patch": 14, "image": 224, "projection": 768}
COLOUR_GAIN = 4.0
POSITION_GAIN = 0.6


def is_standin(path: Path) -> bool:
    """True when ``path`` is a stand-in written here (stand-ins carry the real models' file names)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return STANDIN_KEY in (handle.metadata() or {})
    except Exception:  # not a readable safetensors file: a real model in another format, or none
        return False


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
    save_file(clip_vision_standin_state_dict(), str(partial), metadata={STANDIN_KEY: "clip_vision_vit_l14"})
    os.replace(partial, path)
    return path


SD15_VAE_DDCONFIG = {
    "double_z": True,
    "z_channels": 4,
    "resolution": 256,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 128,
    "ch_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_resolutions": [],
    "dropout": 0.0,
}


def sd15_checkpoint_standin_state_dict(seed: int = 0, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """A randomly initialised SD1.5 single-file checkpoint (U-Net, CLIP-L text, VAE) with the real shapes.

    ``CheckpointLoaderSimple`` detects it as SD1.5 (detection needs model_channels 320 and
    context 768, so a smaller stand-in cannot be used). The images it makes are noise; it is for
    exercising loading, patching and sampling, not for looking at. Needs ComfyUI imported
    (``devtools.comfy_inprocess.import_comfy``).
    """
    import comfy.ldm.models.autoencoder
    import comfy.sd1_clip
    import comfy.supported_models

    from devtools.tiny_models import SD15_FULL_CHANNELS, SD15_FULL_CONTEXT, init_parameters, sd15_unet_config

    config = sd15_unet_config(SD15_FULL_CHANNELS, SD15_FULL_CONTEXT)
    config["dtype"] = dtype
    model_config = comfy.supported_models.SD15(config)
    model_config.set_inference_dtype(dtype, None)
    parts = {
        "model.diffusion_model.": model_config.get_model({}).diffusion_model,
        "cond_stage_model.": comfy.sd1_clip.SDClipModel(device="cpu", dtype=dtype),
        "first_stage_model.": comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=SD15_VAE_DDCONFIG, embed_dim=4),
    }
    sd: dict[str, torch.Tensor] = {}
    for offset, (prefix, module) in enumerate(parts.items()):
        module.to(dtype)
        init_parameters(module, seed + offset, scale=0.02)
        sd.update({prefix + key: value.detach().to(dtype).contiguous() for key, value in module.state_dict().items()})
    return sd


def _write_checkpoint_standin(path: Path, build, marker: str) -> Path:
    """Write ``build()``'s tensors to ``path`` (atomically: a partial file is renamed) unless it exists."""
    path = Path(path)
    if path.exists():
        return path
    from devtools.comfy_inprocess import import_comfy

    import_comfy()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    save_file(build(), str(partial), metadata={STANDIN_KEY: marker})
    os.replace(partial, path)
    return path


def write_sd15_checkpoint_standin(path: Path) -> Path:
    """Write the random SD1.5 checkpoint (~2 GB in fp16) to ``path`` unless it exists."""
    return _write_checkpoint_standin(path, sd15_checkpoint_standin_state_dict, "sd15_checkpoint")


SDXL_STANDIN_CHANNEL_MULT = [1, 1, 1]
"""Every level of the SDXL stand-in is 320 wide. ComfyUI's detection matches SDXL by model_channels
(320), transformer depths ([0, 0, 2, 2, 10, 10]), context (2048) and ADM width (2816), never by the
channel multipliers, so this U-Net has all 70 of SDXL's transformer blocks, its context and ``y``
at about a tenth of SDXL 1.0's 2.6 billion parameters."""


def sdxl_checkpoint_standin_state_dict(seed: int = 0, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """A randomly initialised SDXL single-file checkpoint (U-Net, CLIP-L and bigG text, VAE).

    ``CheckpointLoaderSimple`` detects it as SDXL (``comfy.supported_models.SDXL``) with SDXL 1.0's
    real transformer blocks, context and ADM input; only the deeper levels are narrower
    (:data:`SDXL_STANDIN_CHANNEL_MULT`). The text encoders are SDXL's own (ViT-L and bigG, real
    size) and the keys are written by ComfyUI's own ``process_*_state_dict_for_saving``, as its
    checkpoint save writes them. Needs ComfyUI imported.
    """
    import comfy.ldm.models.autoencoder
    import comfy.sdxl_clip
    import comfy.supported_models

    from devtools.tiny_models import init_parameters, sdxl_full_unet_config

    config = sdxl_full_unet_config()
    config["channel_mult"] = list(SDXL_STANDIN_CHANNEL_MULT)
    config["dtype"] = dtype
    model_config = comfy.supported_models.SDXL(config)
    model_config.set_inference_dtype(dtype, None)
    unet = model_config.get_model({}).diffusion_model
    clip = comfy.sdxl_clip.SDXLClipModel(device="cpu", dtype=dtype)
    vae = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=SD15_VAE_DDCONFIG, embed_dim=4)
    sd: dict[str, torch.Tensor] = {}
    for offset, (module, convert) in enumerate(
        (
            (unet, model_config.process_unet_state_dict_for_saving),
            (clip, model_config.process_clip_state_dict_for_saving),
            (vae, model_config.process_vae_state_dict_for_saving),
        )
    ):
        module.to(dtype)
        init_parameters(module, seed + offset, scale=0.02)
        part = {key: value.detach() for key, value in module.state_dict().items()}
        sd.update({key: value.to(dtype).contiguous() for key, value in convert(part).items()})
    return sd


def write_sdxl_checkpoint_standin(path: Path) -> Path:
    """Write the random SDXL checkpoint (~2.4 GB in fp16, about 20 s) to ``path`` unless it exists."""
    return _write_checkpoint_standin(path, sdxl_checkpoint_standin_state_dict, "sdxl_checkpoint")
