"""The metric maths on hand-made embeddings."""

import pytest
import torch

from p3s_core.errors import P3SInputError
from p3s_core.scoring.metrics import (
    clip_t_prompt,
    image_image_scores,
    image_text_scores,
    prompts_per_image,
    summarise,
)

E1, E2, E3 = torch.eye(3)


def test_identical_embeddings_score_one_and_orthogonal_zero():
    generated = torch.stack([E1, 3 * E2, -E3])  # a scale changes no cosine
    assert image_image_scores(generated, E1[None]).tolist() == pytest.approx([1.0, 0.0, 0.0])
    assert image_image_scores(generated, (2 * E2)[None]).tolist() == pytest.approx([0.0, 1.0, 0.0])
    assert image_image_scores(generated, E3[None]).tolist() == pytest.approx([0.0, 0.0, -1.0])


def test_image_scores_are_the_mean_over_references():
    references = torch.stack([E1, E2, E1 + E2])  # cosines with E1: 1, 0, 1/sqrt(2)
    scores = image_image_scores(E1[None], references)
    assert scores.item() == pytest.approx((1 + 0 + 2**-0.5) / 3)
    assert image_image_scores(torch.stack([E1, E2]), references).tolist() == pytest.approx([scores.item()] * 2)


def test_text_scores_pair_each_image_with_its_own_text():
    images = torch.stack([E1, E2])
    texts = torch.stack([E1 + E2, E2])
    assert image_text_scores(images, texts).tolist() == pytest.approx([2**-0.5, 1.0])
    with pytest.raises(P3SInputError, match="pair up"):
        image_text_scores(images, texts[:1])


def test_mean_and_population_variance():
    summary = summarise(torch.tensor([0.2, 0.4, 0.9]))
    assert summary.mean == pytest.approx(0.5)
    assert summary.variance == pytest.approx(((0.3**2) + (0.1**2) + (0.4**2)) / 3)


def test_the_identifier_is_removed_for_clip_t_as_a_whole_word():
    assert clip_t_prompt("a photo of sks dog in the jungle", "sks") == "a photo of dog in the jungle"
    assert clip_t_prompt("a sksdog, sks.", "sks") == "a sksdog, ."
    assert clip_t_prompt("a photo of sks dog", "") == "a photo of sks dog"


def test_prompts_cover_the_images_one_each_or_in_groups():
    assert prompts_per_image(["a"], 3) == ["a", "a", "a"]
    assert prompts_per_image(["a", "", "b"], 4) == ["a", "a", "b", "b"]  # empty lines skipped
    assert prompts_per_image(["a", "b", "c"], 3) == ["a", "b", "c"]
    with pytest.raises(P3SInputError, match="divides 4"):
        prompts_per_image(["a", "b", "c"], 4)
    with pytest.raises(P3SInputError, match="empty"):
        prompts_per_image([" "], 2)


def test_zero_and_mismatched_embeddings_are_refused():
    with pytest.raises(P3SInputError, match="all zeros"):
        image_image_scores(torch.zeros(1, 3), E1[None])
    with pytest.raises(P3SInputError, match="same model"):
        image_image_scores(E1[None], torch.ones(1, 4))
