"""SD1.5, the paper's base [stated]: its transformer blocks, its last cross-attention layer, its names.

Everything the pack knows about one base architecture sits in one module like this one (the
same names in each: :mod:`.sdxl` is the other): how ComfyUI calls its model, the blocks its
injection sites must be at, the layer ``L_ac`` compares, its context width and ADM (``y``)
input, its default resolution and latent format, the names saved in model files
(``p3s.base``, the config's ``architecture``, the modelspec architecture) and the layers the
Attention Maps node offers. :mod:`.registry` picks the module from a MODEL.
"""

from __future__ import annotations

from torch import nn

from ..errors import P3SInputError
from .unet_sites import InjectionSite, injection_sites

NAME = "sd15"
"""The base's name in model files (``p3s.base``) and in the pack's messages."""
DISPLAY_NAME = "SD1.5"
"""How messages name the base."""
ARCHITECTURE = "p3s-sd15"
"""The ``architecture`` of a P3S model's config on this base."""
MODELSPEC_ARCHITECTURE = "stable-diffusion-v1"
"""The base part of the file's ``modelspec.architecture`` (``stable-diffusion-v1/p3s``)."""
COMFY_MODEL_CONFIG = "SD15"
"""The ``comfy.supported_models`` class (or a subclass of it) ComfyUI builds for this base."""
EXAMPLE_CHECKPOINT = "v1-5-pruned-emaonly"
"""A checkpoint named in messages."""

CONTEXT_DIM = 768
"""Width of the text context the cross-attention reads (CLIP ViT-L/14's tokens)."""
ADM_IN_CHANNELS = None
"""No ADM (``y``) input: the U-Net has no ``label_emb``."""
LATENT_CHANNELS = 4
PIXELS_PER_LATENT = 8
"""SD1.5's VAE: one latent pixel is 8x8 image pixels."""
DEFAULT_RESOLUTION = 512
"""The side the base was trained at (the Fine-tune's default resolution)."""
LATENT_FORMAT = "SD15"
"""ComfyUI's ``latent_formats`` class; the pack reads the MODEL's own (``process_latent_in``)."""

# Our addition (scope ``auto``, :mod:`p3s_core.training.scope_memory`): what a training step keeps
# for backward. SD1.5's is an estimate for 512 px in 16-bit (about 8 GB for both passes), kept as it
# was set; ``benchmarks/bench_activations.py`` finds what autograd saves about 5x lower on the CPU.
ACTIVATION_BYTES_PER_LATENT_PIXEL = 2 * 2**20
"""Bytes kept per latent pixel and image by both passes of a 16-bit training step without checkpointing."""
CHECKPOINTING_SAVING = 4.0
"""How many times less gradient checkpointing keeps (an assumption; measured 6.6x on the CPU)."""

# [stated] SD1.5 has 16 transformer blocks: input 1,2,4,5,7,8; middle 0; output 3..11.
TRANSFORMER_BLOCKS = (
    *(("input", i) for i in (1, 2, 4, 5, 7, 8)),
    ("middle", 0),
    *(("output", i) for i in range(3, 12)),
)


def check_layout(unet: nn.Module) -> list[InjectionSite]:
    """Return the 16 sites of an SD1.5-shaped U-Net, or raise ``P3SInputError``."""
    if not hasattr(unet, "input_blocks") or not hasattr(unet, "output_blocks"):
        raise P3SInputError(
            f"P3S needs an SD1.5 U-Net, got {type(unet).__name__}. Load an SD1.5 checkpoint as the base model."
        )
    in_channels = getattr(unet, "in_channels", None)
    if in_channels != 4 or getattr(unet, "num_classes", None) is not None:
        raise P3SInputError(
            f"P3S needs a plain SD1.5 U-Net (4 latent channels, no class/ADM input); this one has "
            f"{in_channels} input channels. Use a standard SD1.5 checkpoint, not an inpainting, "
            "instruct-pix2pix or SDXL one."
        )
    sites = injection_sites(unet)
    layout = tuple((s.block, s.block_id) for s in sites)
    if layout != TRANSFORMER_BLOCKS or any(s.depth != 1 for s in sites):
        raise P3SInputError(
            f"P3S needs an SD1.5 U-Net (16 transformer blocks at input 1,2,4,5,7,8, middle 0, output 3..11); "
            f"this one has {len(sites)} at {sorted(set(layout))}. Load an SD1.5 checkpoint as the base model."
        )
    return sites


# [stated] L_ac compares the last cross-attention layer: output block 11 in SD1.5.
LAST_CROSS_ATTENTION = ("output", 11)


ATTENTION_MAP_LAYERS = [f"{name}_{i}" for name, i in TRANSFORMER_BLOCKS]
"""The cross-attention layers the Attention Maps node offers, by key (``input_1`` ... ``output_11``)."""
