"""score_subject end to end on the tiny backbones, and its table and chart."""

import numpy as np
import pytest
import torch

from devtools.tiny_eval_models import comfy_tokenizer_dir
from p3s_core.errors import P3SInputError
from p3s_core.scoring.backbones import load_clip, load_dino
from p3s_core.scoring.metrics import image_text_scores
from p3s_core.scoring.preprocess import preprocess_images
from p3s_core.scoring.protocol import CLIP_PREPROCESS
from p3s_core.scoring.report import _thumbnail, render_score_chart, score_table
from p3s_core.scoring.subject_score import score_subject


@pytest.fixture(scope="module")
def backbones(eval_models):
    return load_clip(eval_models["clip_file"], comfy_tokenizer_dir()), load_dino(eval_models["dino_file"])


def _images(count, seed, size=(96, 128)):
    return torch.rand(count, *size, 3, generator=torch.Generator().manual_seed(seed))


def test_generated_images_equal_to_the_references_score_one(backbones):
    clip, dino = backbones
    references = _images(2, seed=0)
    scores = score_subject(references[:1], references[:1], ["a photo of sks dog"], clip, dino)
    assert scores.clip_i.item() == pytest.approx(1.0, abs=1e-6) and scores.dino.item() == pytest.approx(1.0, abs=1e-6)
    two = score_subject(references[:1], references, ["a photo of sks dog"], clip, dino)
    separate = [score_subject(references[:1], references[i : i + 1], ["x"], clip, dino) for i in range(2)]
    assert two.clip_i.item() == pytest.approx(np.mean([s.clip_i.item() for s in separate]))  # mean over references
    assert two.dino.item() == pytest.approx(np.mean([s.dino.item() for s in separate]))
    assert two.clip_i.item() < 1.0 - 1e-4


def test_clip_t_compares_with_the_prompt_without_its_identifier(backbones):
    clip, dino = backbones
    images = _images(2, seed=1)
    scores = score_subject(images, _images(1, seed=2), ["a photo of sks dog", "sks dog on a beach"], clip, dino)
    assert scores.prompts == ["a photo of dog", "dog on a beach"]
    pixels = preprocess_images(images, CLIP_PREPROCESS)
    expected = image_text_scores(clip.embed_images(pixels), clip.embed_texts(["a photo of dog", "dog on a beach"]))
    with_identifier = image_text_scores(
        clip.embed_images(pixels), clip.embed_texts(["a photo of sks dog", "sks dog on a beach"])
    )
    assert torch.allclose(scores.clip_t, expected, atol=1e-6)
    assert not torch.allclose(scores.clip_t, with_identifier, atol=1e-4)


def test_masked_references_and_tiny_backbones_are_not_called_the_protocol(backbones):
    clip, dino = backbones
    references = _images(2, seed=3)
    masks = torch.zeros(2, 96, 128)
    masks[:, 20:70, 30:90] = 1
    plain = score_subject(_images(4, seed=4), references, ["a sks dog"], clip, dino)
    masked = score_subject(_images(4, seed=4), references, ["a sks dog"], clip, dino, reference_masks=masks)
    assert masked.masked and not torch.allclose(plain.dino, masked.dino)
    table = score_table(masked)
    assert table.startswith("NOT the DreamBench protocol") and "masked (our addition)" in table
    assert table.count("\n| ") == 4 + 2 + 1  # header, 4 images, mean, variance
    with pytest.raises(P3SInputError, match="3 reference masks for 2 references"):
        score_subject(_images(1, seed=4), references, ["a"], clip, dino, reference_masks=torch.ones(3, 96, 128))
    with pytest.raises(P3SInputError, match="these very references"):
        score_subject(_images(1, seed=4), references, ["a"], clip, dino, reference_masks=torch.ones(2, 48, 64))


def test_the_extra_clip_i_comes_from_the_given_embeddings(backbones):
    clip, dino = backbones
    generated, references = torch.eye(4)[:2], torch.eye(4)[[0, 0, 2]]
    scores = score_subject(
        _images(2, seed=5),
        _images(3, seed=6),
        ["a"],
        clip,
        dino,
        extra_embeddings=(generated, references),
        extra_label="L/14",
    )
    assert scores.extra_clip_i.tolist() == pytest.approx([2 / 3, 0.0])
    assert "CLIP-I* = L/14, not the protocol's backbone" in score_table(scores)


def test_the_chart_shows_every_image_and_its_bars(backbones):
    clip, dino = backbones
    images = _images(3, seed=7)
    scores = score_subject(images, images[:1], ["a sks dog"], clip, dino)
    chart = render_score_chart(images, scores, thumbnail=64)
    assert chart.dtype == np.float32 and chart.shape[2] == 3 and chart.min() >= 0 and chart.max() <= 1
    first = chart[88 : 88 + 64, 8 : 8 + 64]  # the first thumbnail's cell below the header (34 + 3 * 18)
    assert np.array_equal(first, _thumbnail(images[0], 64).astype(np.float32) / 255)
    bar_top = 88 + 64 + 3
    bar = chart[bar_top + 1, 8 : 8 + 64]  # above the value's text
    blue = (np.abs(bar - np.array([26, 89, 191]) / 255).sum(axis=1) < 0.02).sum()
    assert blue == pytest.approx(round(min(1.0, scores.clip_i[0].item()) * 63), abs=2)  # CLIP-I bar of image 0 = 1.0


def test_lists_of_images_of_different_sizes_score_as_batches_do(backbones):
    clip, dino = backbones
    images, references = _images(2, seed=8), _images(2, seed=9)
    batch = score_subject(images, references, ["a sks dog"], clip, dino)
    listed = score_subject(list(images), list(references), ["a sks dog"], clip, dino)
    assert torch.equal(batch.clip_i, listed.clip_i) and torch.equal(batch.dino, listed.dino)
    mixed = [references[0], _images(1, seed=10, size=(150, 90))[0]]
    masks = [torch.ones(96, 128), torch.ones(150, 90)]
    assert score_subject(images, mixed, ["a"], clip, dino, reference_masks=masks).references == 2
    with pytest.raises(P3SInputError, match="these very references"):
        score_subject(images, mixed, ["a"], clip, dino, reference_masks=[torch.ones(96, 128)] * 2)


def test_one_mask_serves_every_reference(backbones):
    clip, dino = backbones
    references, mask = _images(2, seed=11), torch.zeros(1, 96, 128)
    mask[:, 10:80, 20:100] = 1
    one = score_subject(_images(1, seed=12), references, ["a"], clip, dino, reference_masks=mask)
    both = score_subject(_images(1, seed=12), references, ["a"], clip, dino, reference_masks=mask.expand(2, -1, -1))
    assert torch.equal(one.dino, both.dino) and one.references == 2
