"""SDXL (our addition: the paper trains on SD1.5 only): the same names as :mod:`.sd15`, for SDXL.

SDXL's U-Net has three levels (``channel_mult`` 1, 2, 4) and transformer blocks only at the two
deeper ones, several per block (depth 2 and 10 in SDXL 1.0), so its sites carry a depth index
(``input_4_0``, ``input_4_1``; see :mod:`.unet_sites`). It reads a 2048-wide context (CLIP
ViT-L and bigG tokens side by side) and an ADM vector ``y`` (the pooled bigG embedding and six
size embeddings, built by ComfyUI's ``model_base.SDXL.encode_adm``), which the copy's pass is
given exactly as the frozen pass is.
"""

from __future__ import annotations

from torch import nn

from ..errors import P3SInputError
from . import sd15
from .unet_sites import InjectionSite, injection_sites

NAME = "sdxl"
"""The base's name in model files (``p3s.base``) and in the pack's messages."""
DISPLAY_NAME = "SDXL"
"""How messages name the base."""
ARCHITECTURE = "p3s-sdxl"
"""The ``architecture`` of a P3S model's config on this base."""
MODELSPEC_ARCHITECTURE = "stable-diffusion-xl-v1-base"
"""The base part of the file's ``modelspec.architecture`` (the model-spec name of SDXL 1.0 base)."""
COMFY_MODEL_CONFIG = "SDXL"
"""The ``comfy.supported_models`` class (or a subclass) ComfyUI builds for this base; distilled subclasses
without SDXL's blocks (SSD-1B has no middle transformer) are refused by :func:`check_layout`."""
EXAMPLE_CHECKPOINT = "sd_xl_base_1.0"
"""A checkpoint named in messages."""

CONTEXT_DIM = 2048
"""Width of the text context the cross-attention reads (ViT-L's 768 + bigG's 1280)."""
ADM_IN_CHANNELS = 2816
"""The ADM (``y``) width: the pooled bigG embedding (1280) and six 256-wide size embeddings."""
LATENT_CHANNELS = 4
PIXELS_PER_LATENT = 8
DEFAULT_RESOLUTION = 1024
"""The side the base was trained at."""
LATENT_FORMAT = "SDXL"
"""ComfyUI's ``latent_formats`` class (scale 0.13025); the pack reads the MODEL's own."""

# Our addition (scope ``auto``): SDXL's activations relative to SD1.5's estimate
# (:data:`.sd15.ACTIVATION_BYTES_PER_LATENT_PIXEL`), by what one training step of each full-size
# U-Net keeps for backward (``benchmarks/bench_activations.py``, bf16, CPU, slope over 16-32 latents:
# 0.624 against 0.363 MiB per latent pixel, 1.72x; with gradient checkpointing 0.076 against
# 0.055 MiB, 1.37x, a figure that moved between 1.1x and 1.7x with the sizes and masks measured).
# SDXL keeps more per latent pixel (ten-deep blocks at 1/16 of the pixels, none at full latent
# size), and its checkpointing saves more (its layers' inputs are a smaller share of what they keep).
ACTIVATIONS_OVER_SD15 = 1.72
"""What SDXL keeps per latent pixel over SD1.5, without checkpointing (measured)."""
CHECKPOINTED_ACTIVATIONS_OVER_SD15 = 1.37
"""The same with gradient checkpointing (measured)."""
ACTIVATION_BYTES_PER_LATENT_PIXEL = int(sd15.ACTIVATION_BYTES_PER_LATENT_PIXEL * ACTIVATIONS_OVER_SD15)
"""Bytes kept per latent pixel and image by both passes of a 16-bit step without checkpointing."""
CHECKPOINTING_SAVING = sd15.CHECKPOINTING_SAVING * ACTIVATIONS_OVER_SD15 / CHECKPOINTED_ACTIVATIONS_OVER_SD15
"""How many times less gradient checkpointing keeps, scaled from SD1.5's by the measured ratios."""

# The blocks that hold transformer blocks in SDXL 1.0: input 4,5,7,8; middle 0; output 0..5 (depth
# 2 at the middle level, 10 at the deepest; any depth is accepted, the sites are read from the U-Net).
TRANSFORMER_BLOCKS = (
    *(("input", i) for i in (4, 5, 7, 8)),
    ("middle", 0),
    *(("output", i) for i in range(6)),
)


def check_layout(unet: nn.Module) -> list[InjectionSite]:
    """Return the sites of an SDXL-shaped U-Net (any depth per block), or raise ``P3SInputError``."""
    if not hasattr(unet, "input_blocks") or not hasattr(unet, "output_blocks"):
        raise P3SInputError(
            f"P3S needs an SDXL U-Net, got {type(unet).__name__}. Load an SDXL checkpoint as the base model."
        )
    in_channels = getattr(unet, "in_channels", None)
    if in_channels != LATENT_CHANNELS or getattr(unet, "num_classes", None) != "sequential":
        raise P3SInputError(
            f"P3S needs a plain SDXL U-Net (4 latent channels and its ADM input); this one has {in_channels} "
            "input channels. Use a standard SDXL checkpoint, not an inpainting or instruct-pix2pix one."
        )
    sites = injection_sites(unet)
    layout = tuple(dict.fromkeys((s.block, s.block_id) for s in sites))
    if layout != TRANSFORMER_BLOCKS:
        raise P3SInputError(
            "P3S needs an SDXL U-Net (transformer blocks at input 4,5,7,8, middle 0, output 0..5); this one has "
            f"them at {sorted(layout)}. Load an SDXL base checkpoint as the base model."
        )
    return sites


# [reconstructed] the paper's L_ac layer is SD1.5's last cross-attention layer; on SDXL the last
# one is in output block 5 (its last transformer block, see :func:`.unet_sites.last_layer_key`).
LAST_CROSS_ATTENTION = ("output", 5)


ATTENTION_MAP_LAYERS = [f"{name}_{i}" for name, i in TRANSFORMER_BLOCKS]
"""The cross-attention blocks the Attention Maps node offers, by block key (``input_4`` ... ``output_5``);
a block of depth > 1 is mapped at its last transformer block."""
