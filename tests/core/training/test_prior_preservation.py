"""Prior preservation (our addition, DreamBooth's): class images denoised beside the references.

Off (weight 0) it must not change a single weight; on, it changes the training and takes its
draws from a stream of its own; asked for without class images it is refused before training.
"""

from __future__ import annotations

import pytest
import torch

from ..p3s_support import ENCODER, import_pack_module, random_training_data

patching = import_pack_module("nodes.p3s_patching")
training_loop = import_pack_module("p3s_core.training.loop")
training_settings = import_pack_module("p3s_core.training.settings")
errors = import_pack_module("p3s_core.errors")


def with_prior(refs, classes: int = 2, seed: int = 9):
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn(classes, *refs.latents.shape[1:], generator=gen)
    contexts = torch.randn(classes, *refs.contexts.shape[1:], generator=gen)
    return training_settings.TrainingData(**{**refs.__dict__, "prior_latents": latents, "prior_contexts": contexts})


def trained(base, sigmas, data, **settings):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        p3s = patching.new_p3s_model(base, ENCODER)
    options = {"epochs": 2, "lr": 1e-3, "seed": 3, **settings}
    history = training_loop.train_p3s(
        p3s, base.model.diffusion_model, sigmas, data, training_settings.TrainSettings(**options)
    )
    return p3s, history


def test_weight_zero_trains_bit_identically_even_with_class_images_given(base, sigmas):
    refs = random_training_data(3, 4)
    plain, plain_history = trained(base, sigmas, refs)
    given, given_history = trained(base, sigmas, with_prior(refs))
    for key, value in plain.state_dict().items():
        assert torch.equal(given.state_dict()[key], value), key
    assert given_history.total == plain_history.total and given_history.prior == []


def test_weight_above_zero_trains_on_the_class_images_and_records_their_loss(base, sigmas):
    refs = random_training_data(3, 4)
    plain, plain_history = trained(base, sigmas, refs)
    prior, history = trained(base, sigmas, with_prior(refs), prior_loss_weight=1.0)
    assert len(history.prior) == len(history.total) == len(plain_history.total)
    assert all(p > 0 for p in history.prior)
    assert history.total[0] == pytest.approx(plain_history.total[0] + history.prior[0], rel=1e-5), (
        "the first step's subject loss is the same draw: its draws are apart from the prior's"
    )
    assert history.ldm[0] == plain_history.ldm[0]
    changed = [k for k, v in plain.state_dict().items() if not torch.equal(prior.state_dict()[k], v)]
    assert changed, "the class images' loss moved the weights"
    _, faint = trained(base, sigmas, with_prior(refs), prior_loss_weight=1e-6)
    assert faint.ldm == pytest.approx(plain_history.ldm, rel=1e-3), (
        "a faint prior leaves every subject step as it was: same rows, noises and timesteps"
    )
    other_classes, _ = trained(base, sigmas, with_prior(refs, seed=10), prior_loss_weight=1.0)
    assert any(not torch.equal(other_classes.state_dict()[k], prior.state_dict()[k]) for k in changed)


def test_a_prior_weight_without_class_images_is_refused_before_training(base, sigmas):
    with pytest.raises(errors.P3SInputError, match="prior_loss_weight above 0 trains on class images"):
        trained(base, sigmas, random_training_data(3, 4), prior_loss_weight=1.0)
    with pytest.raises(errors.P3SInputError, match="prior_loss_weight"):
        training_settings.TrainSettings(prior_loss_weight=-1.0)


def test_class_images_of_another_shape_or_half_given_are_refused_saying_what_to_do():
    refs = random_training_data(3, 4)
    with pytest.raises(errors.P3SInputError, match="at the training resolution"):
        training_settings.TrainingData(
            **{**refs.__dict__, "prior_latents": torch.zeros(2, 4, 4, 4), "prior_contexts": refs.contexts[:2]}
        )
    with pytest.raises(errors.P3SInputError, match="needs both"):
        training_settings.TrainingData(**{**refs.__dict__, "prior_latents": refs.latents})
    moved = with_prior(refs).to("cpu")
    assert moved.has_prior and moved.prior_latents.shape[0] == 2


def test_the_class_prompt_is_the_instance_prompt_without_its_identifier_word():
    prior = import_pack_module("p3s_core.training.prior_preservation")
    assert prior.class_prompt_for("a photo of sks dog", "sks") == "a photo of dog"
    assert prior.class_prompt_for("sks dog, sks on grass", "sks") == "dog, on grass"
    assert prior.class_prompt_for("a photo of sks dog", "sks", " a dog ") == "a dog", "a given one wins"
    with pytest.raises(errors.P3SInputError, match="needs a class prompt"):
        prior.class_prompt_for("a photo of sksdog", "sks")  # not a word of its own
    with pytest.raises(errors.P3SInputError, match="needs a class prompt"):
        prior.class_prompt_for("a photo of sks dog", "")
    with pytest.raises(errors.P3SInputError, match="class_image_count is 0"):
        prior.check_prior_choice(1.0, 0, None)
    assert prior.check_prior_choice(0.0, 0, None) is False, "off: the count is not read"
