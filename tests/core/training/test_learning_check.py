"""P3S Fine-tune's learning check: the references' denoising loss through the base and with the
model, on the same fixed draws, and the line that says whether the run learned."""

from __future__ import annotations

import pytest

from ..p3s_support import ENCODER, import_pack_module, random_training_data, randomise_injection

patching = import_pack_module("nodes.p3s_patching")
learning_check = import_pack_module("p3s_core.training.learning_check")
LearningCheck = learning_check.LearningCheck


def test_a_fresh_model_scores_the_base_loss_exactly_and_a_changed_one_does_not(base, sigmas):
    unet = base.model.diffusion_model
    data = random_training_data()
    p3s = patching.new_p3s_model(base, ENCODER)
    base_loss = learning_check.subject_losses(None, unet, sigmas, data)
    assert base_loss > 0
    # The zero-initialised injection layers leave the base's output as it is: "before" is the base's.
    assert learning_check.subject_losses(p3s, unet, sigmas, data) == base_loss
    assert learning_check.subject_losses(None, unet, sigmas, data) == base_loss, "the draws are fixed"
    randomise_injection(p3s, scale=0.5)
    assert learning_check.subject_losses(p3s, unet, sigmas, data) != base_loss
    assert learning_check.subject_losses(None, unet, sigmas, data, seed=7) != base_loss, "other draws"


def test_the_line_says_how_far_below_the_base_and_warns_when_it_barely_moved():
    learned = LearningCheck(base=0.142, before=0.142, after=0.097)
    assert learned.learned and learned.below_base == pytest.approx(0.317, abs=1e-3)
    assert learned.line("more epochs") == "subject loss 0.142 -> 0.097, 32 % lower than the base"
    still = LearningCheck(base=0.142, before=0.142, after=0.1419)
    assert not still.learned
    line = still.line(learning_check.advice_for("injection", 1e-5, 60))
    assert line.startswith("subject loss 0.142 -> 0.1419, 0 % lower than the base: the model barely moved")
    assert "more epochs (ran 60)" in line and "a higher lr (ran 1e-05)" in line and "richer scope" in line
    worse = LearningCheck(base=0.1, before=0.1, after=0.12)
    assert "20 % higher than the base" in worse.line() and not worse.learned
    assert "richer scope" not in learning_check.advice_for("full", 1e-5, 60)
    assert still.as_dict()["learned"] is False and learned.as_dict()["below_base"] == learned.below_base
