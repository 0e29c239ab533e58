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


def test_maps_node_on_sdxl_maps_the_last_transformer_block_of_the_chosen_block():
    from devtools.tiny_models import tiny_sdxl_patcher

    patching = import_pack_module("nodes.p3s_patching")
    xl = tiny_sdxl_patcher(depth=2, seed=0)
    p3s = patching.new_p3s_model(xl, {"token_dim": 16, "inner_dim": 16, "heads": 2}, "injection")
    applied = patching.apply_p3s(xl, p3s, torch.zeros(1, 4, 8, 8))
    assert "output_0" in nodes.LAYERS and "output_11" in nodes.LAYERS, "both bases' layers are offered"
    captured, attention = nodes.P3SAttentionMaps.execute(
        applied, TokenizerClip(), "a photo of sks dog", "sks", "output_5", "mean", 64
    ).result
    assert attention.settings.block == ("output", 5, 1)
    sample(captured, steps=2)
    frozen, copy = attention.maps("frozen"), attention.maps("copy")
    assert frozen is not None and copy is not None, "the frozen U-Net's and the copy's maps"
    assert tuple(frozen.shape[-2:]) == (4, 4), "output 5 is at half the 8x8 latent's side"
    errors = pack_core(nodes).errors
    with pytest.raises(errors.P3SInputError, match=r"SDXL has no cross-attention layer 'output_11'.*output_5\)"):
        nodes.P3SAttentionMaps.execute(xl, TokenizerClip(), "a photo of sks dog", "sks", "output_11", "mean", 64)


def test_an_sdxl_clip_gives_the_same_word_columns_as_its_clip_l():
    import comfy.sdxl_clip

    patching = import_pack_module("nodes.attention_patching")

    class SdxlTokenizerClip:
        tokenizer = comfy.sdxl_clip.SDXLTokenizer()

        def tokenize(self, text: str) -> dict:
            return self.tokenizer.tokenize_with_weights(text)

    prompt, words = "a photo of sks dog on a beach", ["sks", "dog"]
    groups = patching.word_groups(SdxlTokenizerClip(), prompt, words)
    assert groups == patching.word_groups(TokenizerClip(), prompt, words)
    assert [g.columns for g in groups] == [(4,), (5,)]
