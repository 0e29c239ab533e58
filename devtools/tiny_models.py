"""Small ComfyUI models with SD1.5's (and SDXL's) block layout, for tests and benchmarks (no weights needed).

``tiny_sd15_patcher`` builds ``comfy.supported_models.SD15(unet_config).get_model({})`` with
SD1.5's layout (transformer blocks at input 1,2,4,5,7,8, middle 0, output 3..11, depth 1)
and small channels, then initialises every parameter from a seeded generator, because
ComfyUI's ops skip initialisation; ``tiny_sdxl_patcher`` does the same with SDXL's classes.
Call ``devtools.comfy_inprocess.import_comfy()`` first.
"""

from __future__ import annotations

import torch

SD15_FULL_CHANNELS = 320
SD15_FULL_CONTEXT = 768


def sd15_unet_config(model_channels: int = 32, context_dim: int = 32, num_heads: int = 8) -> dict:
    """An SD1.5 ``unet_config`` (as ComfyUI's detection builds it) with chosen widths."""
    return {
        "use_checkpoint": False,
        "image_size": 32,
        "out_channels": 4,
        "use_spatial_transformer": True,
        "legacy": False,
        "adm_in_channels": None,
        "in_channels": 4,
        "model_channels": model_channels,
        "num_res_blocks": [2, 2, 2, 2],
        "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
        "channel_mult": [1, 2, 4, 4],
        "transformer_depth_middle": 1,
        "use_linear_in_transformer": False,
        "context_dim": context_dim,
        "num_heads": num_heads,
        "num_head_channels": -1,
        "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        "use_temporal_resblock": False,
        "use_temporal_attention": False,
    }


SDXL_SIZE_EMBEDDINGS = 6 * 256
"""The six size embeddings (height, width, crops, target size) ComfyUI's SDXL ``encode_adm`` adds to the pooled text."""


def sdxl_unet_config(
    model_channels: int = 32, context_dim: int = 64, pooled_dim: int = 32, depth: int = 2, head_channels: int = 16
) -> dict:
    """An SDXL ``unet_config`` (as ComfyUI's detection builds it: three levels, transformer blocks of
    ``depth`` at the two deeper ones, linear projections, an ADM input) with chosen widths."""
    return {
        "use_checkpoint": False,
        "image_size": 32,
        "out_channels": 4,
        "use_spatial_transformer": True,
        "legacy": False,
        "num_classes": "sequential",
        "adm_in_channels": pooled_dim + SDXL_SIZE_EMBEDDINGS,
        "in_channels": 4,
        "model_channels": model_channels,
        "num_res_blocks": [2, 2, 2],
        "transformer_depth": [0, 0, depth, depth, depth, depth],
        "channel_mult": [1, 2, 4],
        "transformer_depth_middle": depth,
        "use_linear_in_transformer": True,
        "context_dim": context_dim,
        "num_heads": -1,
        "num_head_channels": head_channels,
        "transformer_depth_output": [0, 0, 0, depth, depth, depth, depth, depth, depth],
        "use_temporal_resblock": False,
        "use_temporal_attention": False,
    }


def init_parameters(module: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    """Fill every parameter with seeded noise (norm weights near 1), in place."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=gen, dtype=torch.float32) * scale
            if "norm" in name and name.endswith("weight"):
                noise = noise + 1.0
            param.copy_(noise.to(param.dtype))


def tiny_sd15_patcher(
    model_channels: int = 32,
    context_dim: int = 32,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    manual_cast_dtype: torch.dtype | None = None,
):
    """A ``ModelPatcher`` over a randomly initialised SD1.5-shaped model on the CPU.

    ``dtype`` is the weights' storage dtype; ``manual_cast_dtype`` (e.g. bf16 for fp8 storage)
    makes ComfyUI compute in that dtype through its manual_cast ops, as it does on GPUs for
    weights the device cannot compute in. None = plain ops (inputs must match the weights).
    """
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    config = sd15_unet_config(model_channels, context_dim)
    config["dtype"] = dtype
    model_config = comfy.supported_models.SD15(config)
    model_config.set_inference_dtype(dtype, manual_cast_dtype)
    model = model_config.get_model({})
    init_parameters(model.diffusion_model, seed)
    model.diffusion_model.to(dtype)
    device = comfy.model_management.get_torch_device()
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device)


def tiny_sdxl_patcher(
    model_channels: int = 32,
    context_dim: int = 64,
    pooled_dim: int = 32,
    depth: int = 2,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    manual_cast_dtype: torch.dtype | None = None,
):
    """A ``ModelPatcher`` over a randomly initialised SDXL-shaped model on the CPU (``dtype`` and
    ``manual_cast_dtype`` as :func:`tiny_sd15_patcher`'s).

    ComfyUI's own ``supported_models.SDXL`` and ``model_base.SDXL`` (so its ``encode_adm`` makes
    ``y`` from a conditioning's ``pooled_output`` of ``pooled_dim`` and the size embeddings), with
    transformer blocks of ``depth`` > 1 and a context wider than the tiny SD1.5 model's.
    """
    config = sdxl_unet_config(model_channels, context_dim, pooled_dim, depth)
    return sdxl_patcher(config, seed, dtype, manual_cast_dtype)


def sdxl_patcher(
    unet_config: dict,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    manual_cast_dtype: torch.dtype | None = None,
):
    """A ``ModelPatcher`` over a randomly initialised SDXL model of ``unet_config`` (e.g.
    :func:`sdxl_full_unet_config`: SDXL 1.0's size) on the CPU, weights stored in ``dtype``."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    config = {**unet_config, "dtype": dtype}
    model_config = comfy.supported_models.SDXL(config)
    model_config.set_inference_dtype(dtype, manual_cast_dtype)
    model = model_config.get_model({})
    init_parameters(model.diffusion_model, seed)
    model.diffusion_model.to(dtype)
    device = comfy.model_management.get_torch_device()
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device)


def controlnet_for(base, seed: int = 21):
    """A ComfyUI ``ControlNet`` with the same config as ``base``'s U-Net (random weights, 3-channel hint)."""
    import comfy.cldm.cldm
    import comfy.controlnet
    import comfy.ops

    config = dict(base.model.model_config.unet_config)
    config.pop("out_channels")
    config.update(hint_channels=3, operations=comfy.ops.disable_weight_init, device=base.load_device)
    control_model = comfy.cldm.cldm.ControlNet(**config)
    init_parameters(control_model, seed)
    return comfy.controlnet.ControlNet(control_model, load_device=base.load_device)


def with_control(conditioning: list, control) -> list:
    """Conditioning with ``control`` attached, as ComfyUI's ControlNet apply nodes do."""
    return [[c, {**extra, "control": control}] for c, extra in conditioning]


SDXL_FULL_CHANNELS = 320
SDXL_FULL_CONTEXT = 2048
SDXL_FULL_POOLED = 1280


def sdxl_full_unet_config() -> dict:
    """SDXL 1.0's ``unet_config`` as ComfyUI's detection builds it (depth 2 and 10, 64-channel heads)."""
    config = sdxl_unet_config(SDXL_FULL_CHANNELS, SDXL_FULL_CONTEXT, SDXL_FULL_POOLED, depth=2, head_channels=64)
    config["transformer_depth"] = [0, 0, 2, 2, 10, 10]
    config["transformer_depth_middle"] = 10
    config["transformer_depth_output"] = [0, 0, 0, 2, 2, 2, 10, 10, 10]
    return config


def random_training_data(
    images: int,
    latent: int,
    context_dim: int,
    token_dim: int = 1024,
    adm: int | None = None,
    seed: int = 3,
    text_tokens: int = 77,
):
    """Seeded random ``TrainingData`` for benchmarks: ``images`` latents of ``latent`` x ``latent``, 257 CLIP
    tokens of ``token_dim``, half-covered 16x16 subject masks, contexts of ``context_dim`` and, for a base
    with an ADM input of width ``adm`` (SDXL), its ``y`` per caption and for the empty prompt."""
    from devtools.pack_modules import import_pack_module

    settings = import_pack_module("p3s_core.training.settings")
    gen = torch.Generator().manual_seed(seed)
    ys = {}
    if adm:
        ys = {"ys": torch.randn(images, adm, generator=gen), "uncond_y": torch.randn(1, adm, generator=gen)}
    return settings.TrainingData(
        torch.randn(images, 4, latent, latent, generator=gen),
        torch.randn(images, 257, token_dim, generator=gen),
        (torch.rand(images, 16, 16, generator=gen) > 0.5).float(),
        torch.randn(images, text_tokens, context_dim, generator=gen),
        torch.randn(1, text_tokens, context_dim, generator=gen),
        **ys,
    )
