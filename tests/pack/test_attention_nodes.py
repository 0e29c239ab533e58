"""P3S Attention Maps and Overlays executed in-process on the tiny model with the real tokenizer."""

from __future__ import annotations

import pytest
import torch
from core.inspection.test_attention_overlay import TokenizerClip
from core.p3s_support import sample

from devtools.pack_modules import import_pack_module, pack_core
from devtools.tiny_models import tiny_sd15_patcher

nodes = import_pack_module("nodes.attention_nodes")


def test_maps_node_captures_words_and_overlays_node_lays_them_out():
    base = tiny_sd15_patcher(seed=0)
    # Tiny conditioning has 7 columns: "a photo of sks dog" puts sks and dog at columns 4..6.
    captured, attention = nodes.P3SAttentionMaps.execute(
        base, TokenizerClip(), "a photo of sks dog", "sks, dog", "output_11", "mean", 64
    ).result
    assert attention.labels == ["sks", "dog"] and max(c for g in attention.settings.groups for c in g.columns) < 7
    sample(captured, steps=3, batch=2)
    images = torch.rand(2, 64, 64, 3)
    frozen, copy, difference, plot = nodes.P3SAttentionOverlays.execute(attention, images, "all, 1, 2-3").result
    assert frozen.shape == copy.shape == difference.shape == (2 * 2 * 3, 64, 64, 3)
    assert torch.equal(copy[0], images[0]), "a plain MODEL: the copy never ran"
    assert not torch.equal(frozen[0], images[0])
    assert plot.shape == (1, 320, 512, 3)
    errors = pack_core(nodes).errors
    with pytest.raises(errors.P3SInputError, match="2 sampled latents"):
        nodes.P3SAttentionOverlays.execute(attention, images[:1], "all")
    with pytest.raises(errors.P3SInputError, match="not found in the prompt"):
        nodes.P3SAttentionMaps.execute(base, TokenizerClip(), "a photo", "dog", "output_11", "mean", 64)
