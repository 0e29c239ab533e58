"""Gradient checkpointing of a ComfyUI U-Net's own layers (ResBlocks, transformers, resamplers).

ComfyUI's ``UNetModel`` does not call its blocks' ``forward``: it walks each
``TimestepEmbedSequential`` with ``forward_timestep_embed`` and calls every layer in it. So
checkpointing wraps those layers, not the blocks: each layer's instance ``forward`` becomes a
non-reentrant ``torch.utils.checkpoint`` of its class ``forward`` while the context is open.
Its activations are dropped after the forward pass and recomputed in backward, with the
``transformer_options`` it saw (block ids and patches). Our addition.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import torch.utils.checkpoint
from torch import nn


def unet_layers(unet: nn.Module) -> list[nn.Module]:
    """The layers inside the U-Net's input, middle and output blocks that hold weights."""
    blocks = [
        *getattr(unet, "input_blocks", []),
        getattr(unet, "middle_block", None),
        *getattr(unet, "output_blocks", []),
    ]
    layers = []
    for block in blocks:
        if block is None:
            continue
        children = list(block.children()) if isinstance(block, nn.Sequential) else [block]
        layers.extend(child for child in children if any(True for _ in child.parameters()))
    return layers


@contextlib.contextmanager
def checkpointed(unets: list[nn.Module], enabled: bool = True) -> Iterator[None]:
    """Checkpoint every layer of ``unets`` (see :func:`unet_layers`) while open; restored afterwards."""
    layers = []
    seen = set()
    for unet in unets if enabled else []:
        for layer in unet_layers(unet):
            if id(layer) not in seen and "forward" not in vars(layer):
                seen.add(id(layer))
                layers.append(layer)
    for layer in layers:
        layer.forward = functools.partial(_checkpoint_call, type(layer).forward.__get__(layer))
    try:
        yield
    finally:
        for layer in layers:
            vars(layer).pop("forward", None)


def _checkpoint_call(forward: Callable, *args, **kwargs):
    # ``transformer_options`` is one dict that the U-Net keeps changing (``block``,
    # ``block_index``): the recomputation in backward must see it as it was now.
    args = tuple(dict(a) if isinstance(a, dict) else a for a in args)
    kwargs = {k: dict(v) if isinstance(v, dict) else v for k, v in kwargs.items()}
    return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)
