"""Token columns of words, overlays of attention maps, step items and the L_ac plot."""

from __future__ import annotations

import pytest
import torch

from devtools.comfy_inprocess import import_comfy
from p3s_core.errors import P3SInputError
from p3s_core.inspection.attention_overlay import attention_overlays, difference_overlay, label_images, parse_step_items
from p3s_core.inspection.loss_plot import plot_step_values
from p3s_core.inspection.schedule_plot import CURVE_COLOR, STEP_COLOR
from p3s_core.inspection.tokens import find_sequence, parse_words, token_groups


class TokenizerClip:
    """ComfyUI's real SD1.5 tokenizer behind the CLIP object's ``tokenize``."""

    def __init__(self):
        import_comfy()
        import comfy.sd1_clip

        self.tokenizer = comfy.sd1_clip.SD1Tokenizer()

    def tokenize(self, text):
        return self.tokenizer.tokenize_with_weights(text)


def test_find_sequence_takes_every_occurrence_of_the_whole_word():
    assert find_sequence([0, 5, 6, 7, 5, 6, 9], [5, 6]) == [1, 2, 4, 5]
    assert find_sequence([0, 5, 7], [5, 6]) == []
    assert parse_words(" sks, dog ,, sks") == ["sks", "dog"]


def test_words_map_to_their_columns_with_the_real_tokenizer():
    from devtools.pack_modules import import_pack_module

    glue = import_pack_module("nodes.attention_patching")
    clip = TokenizerClip()
    chunks = glue.prompt_token_chunks(clip, "a photo of sks dog next to another dog")
    prompt = [t for chunk in chunks for t in chunk]
    words = {w: glue.word_token_ids(clip, w) for w in ("sks", "dog")}
    groups = token_groups(chunks, words, glue.special_token_ids(clip))
    vocab = clip.tokenizer.clip_l.tokenizer
    decoded = {g.label: [vocab.decode([prompt[c]]).strip() for c in g.columns] for g in groups}
    assert "".join(decoded["sks"]) == "sks" and decoded["sks"] != []
    assert decoded["dog"] == ["dog", "dog"]
    first_dog = groups[1].columns[0]
    # column 0 is the start token: "a photo of sks" come first
    assert [vocab.decode([t]).strip() for t in prompt[1:4]] == ["a", "photo", "of"]
    assert first_dog == 4 + len(words["sks"])
    with pytest.raises(P3SInputError, match="'cat' not found in the prompt"):
        token_groups(chunks, {"cat": glue.word_token_ids(clip, "cat")}, glue.special_token_ids(clip))


def test_overlays_of_equal_maps_look_equal_and_show_no_difference():
    image = torch.full((2, 32, 48, 3), 0.5)
    frozen = torch.zeros(2, 4, 6)
    frozen[:, 1, 2] = 1.0
    out = attention_overlays(image, frozen, frozen.clone())
    assert all(t.shape == (2, 32, 48, 3) for t in out)
    assert torch.equal(out.frozen, out.copy)
    assert torch.allclose(out.difference, difference_overlay(image, torch.zeros(2, 32, 48)))
    hot = out.frozen[0, 12, 20] - out.frozen[0, 28, 44]  # under the peak vs far away: red vs blue
    assert hot[0] > 0.2 and hot[2] < -0.2, "jet: red at the peak, blue elsewhere"


def test_difference_is_red_where_the_copy_attends_more():
    image = torch.full((24, 24, 3), 0.5)
    frozen, copy = torch.zeros(3, 3), torch.zeros(3, 3)
    copy[0, 0], frozen[2, 2] = 1.0, 1.0
    diff = attention_overlays(image, frozen, copy).difference[0]
    assert diff[1, 1, 0] > diff[1, 1, 2] + 0.3  # copy > frozen: red
    assert diff[22, 22, 2] > diff[22, 22, 0] + 0.3  # copy < frozen: blue
    plain = attention_overlays(image, frozen, None)
    assert torch.equal(plain.copy[0], image) and torch.equal(plain.difference[0], image)
    with pytest.raises(P3SInputError, match="one map per image"):
        attention_overlays(torch.zeros(2, 8, 8, 3), frozen, copy)


def test_labels_only_on_wide_images():
    wide = torch.zeros(1, 64, 256, 3)
    assert label_images(wide, ["frozen 'dog'"])[0, :10, :40].max() > 0.5
    narrow = torch.zeros(1, 64, 64, 3)
    assert torch.equal(label_images(narrow, ["x"]), narrow)


def test_step_items():
    assert parse_step_items("all", 20) == [("steps 1-20", None)]
    assert parse_step_items("1, 5-7", 20) == [("step 1", [1]), ("steps 5-7", [5, 6, 7])]
    assert parse_step_items("all, 2", 3) == [("steps 1-3", None), ("step 2", [2])]
    with pytest.raises(P3SInputError, match="outside"):
        parse_step_items("21", 20)
    with pytest.raises(P3SInputError, match="Cannot read"):
        parse_step_items("first", 20)


def test_lac_plot_draws_points_and_leaves_gaps():
    curve = [0.2, 0.4, None, 0.3]
    plot = plot_step_values(curve, width=320, height=200)
    assert plot.shape == (200, 320, 3)
    step = torch.tensor(STEP_COLOR) / 255.0
    dots = (torch.from_numpy(plot) - step).abs().sum(-1) < 0.05
    columns = dots.any(dim=0).nonzero().flatten()
    assert len(columns.unique_consecutive()) >= 3 and columns.numel() > 0
    line = (torch.from_numpy(plot) - torch.tensor(CURVE_COLOR) / 255.0).abs().sum(-1) < 0.05
    empty = plot_step_values([None, None], width=320, height=200)
    assert line.any() and not ((torch.from_numpy(empty) - step).abs().sum(-1) < 0.05).any()


def test_lac_plot_scales_its_axis_to_tiny_values():
    tiny = plot_step_values([2e-7, 5e-7, 4e-7], width=320, height=200)
    big = plot_step_values([0.2, 0.5, 0.4], width=320, height=200)

    # same shape of curve, scaled axis: the drawn curve sits at the same rows
    def rows(plot):
        dots = (torch.from_numpy(plot) - torch.tensor(STEP_COLOR) / 255.0).abs().sum(-1) < 0.05
        return dots.any(dim=1).nonzero().flatten().tolist()

    assert rows(tiny) == rows(big)
