"""Where the transformer blocks of an SD1.5 U-Net sit, and the keys P3S gives them.

Keys follow ComfyUI's block ids: the block name and id (``input_1``, ``middle_0``,
``output_11``), plus ``_<index>`` when a block holds several transformer blocks (never in
SD1.5). The U-Net is inspected by structure only (``input_blocks``, ``middle_block``,
``output_blocks``, layers with ``transformer_blocks``), so no host import is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .errors import P3SInputError

ATTENTIONS = ("attn1", "attn2")

# [stated] SD1.5 has 16 transformer blocks: input 1,2,4,5,7,8; middle 0; output 3..11.
SD15_TRANSFORMER_BLOCKS = (
    *(("input", i) for i in (1, 2, 4, 5, 7, 8)),
    ("middle", 0),
    *(("output", i) for i in range(3, 12)),
)


@dataclass(frozen=True)
class InjectionSite:
    """One transformer block: ComfyUI's ``(block name, block id, block_index)`` and its width."""

    block: str
    block_id: int
    block_index: int
    depth: int
    channels: int

    @property
    def key(self) -> str:
        """Stable name, e.g. ``input_1`` or ``middle_0``; ``input_1_2`` for depth > 1."""
        base = f"{self.block}_{self.block_id}"
        return base if self.depth == 1 else f"{base}_{self.block_index}"

    @property
    def host_key(self) -> tuple[str, int, int]:
        """The ``(block[0], block[1], block_index)`` triple ComfyUI's patches see."""
        return (self.block, self.block_id, self.block_index)


def _block_groups(unet: nn.Module) -> list[tuple[str, int, nn.Module]]:
    groups: list[tuple[str, int, nn.Module]] = []
    for name, attr in (("input", "input_blocks"), ("output", "output_blocks")):
        for block_id, block in enumerate(getattr(unet, attr, [])):
            groups.append((name, block_id, block))
    middle = getattr(unet, "middle_block", None)
    if middle is not None:
        groups.insert(len(getattr(unet, "input_blocks", [])), ("middle", 0, middle))
    return groups


def injection_sites(unet: nn.Module) -> list[InjectionSite]:
    """Every transformer block of a ComfyUI ``UNetModel``, in forward order."""
    sites: list[InjectionSite] = []
    for name, block_id, block in _block_groups(unet):
        for layer in block.children():
            blocks = getattr(layer, "transformer_blocks", None)
            if blocks is None:
                continue
            for index, tblock in enumerate(blocks):
                channels = int(tblock.attn1.to_out[0].weight.shape[0])
                sites.append(InjectionSite(name, block_id, index, len(blocks), channels))
    return sites


def check_sd15_layout(unet: nn.Module) -> list[InjectionSite]:
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
    if layout != SD15_TRANSFORMER_BLOCKS or any(s.depth != 1 for s in sites):
        raise P3SInputError(
            f"P3S needs an SD1.5 U-Net (16 transformer blocks at input 1,2,4,5,7,8, middle 0, output 3..11); "
            f"this one has {len(sites)} at {sorted(set(layout))}. Load an SD1.5 checkpoint as the base model."
        )
    return sites


# [stated] L_ac compares the last cross-attention layer: output block 11 in SD1.5.
LAST_CROSS_ATTENTION = ("output", 11)
