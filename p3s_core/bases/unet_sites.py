"""Where the transformer blocks of a ComfyUI U-Net sit, and the keys P3S gives them (any base).

Keys follow ComfyUI's block ids: the block name and id (``input_1``, ``middle_0``,
``output_11``), plus ``_<index>`` when a block holds several transformer blocks (never in
SD1.5). The U-Net is inspected by structure only (``input_blocks``, ``middle_block``,
``output_blocks``, layers with ``transformer_blocks``), so no host import is needed.
What one base's blocks must be lives in that base's module (:mod:`.sd15`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

ATTENTIONS = ("attn1", "attn2")


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


def layer_key(site: InjectionSite) -> tuple[str, int] | tuple[str, int, int]:
    """The key ComfyUI's ``attn2`` replace patches take for one site: ``(block, id)`` at depth 1,
    ``(block, id, index)`` in a deeper block (ComfyUI looks the triple up first)."""
    return (site.block, site.block_id) if site.depth == 1 else site.host_key


def last_layer_key(sites: list[InjectionSite], block: tuple[str, int]) -> tuple[str, int] | tuple[str, int, int]:
    """The layer key of the last transformer block in ``block`` (a base's last cross-attention layer)."""
    inside = [s for s in sites if (s.block, s.block_id) == tuple(block)]
    if not inside:
        raise ValueError(f"No transformer block in {block}.")
    return layer_key(inside[-1])
