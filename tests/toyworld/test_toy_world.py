"""The toy world's quick check: P3S learns the picked subject, and the check can fail.

Builds (or loads from ``$P3S_TOY_WORLD_CACHE``) the quick base (``benchmarks.toy_world.base
--quick``: a few minutes on one thread), fine-tunes P3S on the four references of the yellow
striped diamond, and compares identity scores of samples of "a photo of sks" read by the
evaluator. The same comparison with every injection layer set to zero (P3S applied but
adding nothing) must not pass: that shows the check measures the injection, not chance.
"""

from __future__ import annotations

import copy

import pytest
import torch

from benchmarks.toy_world import base, runs
from benchmarks.toy_world.evaluator import train_evaluator
from benchmarks.toy_world.host import autograd_safe_attention
from benchmarks.toy_world.methods import train_p3s_model
from benchmarks.toy_world.metrics import Generator, score
from benchmarks.toy_world.subject import reference_scenes, training_data
from benchmarks.toy_world.text import WordEncoder

# Identity of P3S minus that of the plain base, set from the measured quick runs (see docs/toy_world.md).
IDENTITY_MARGIN = 0.25
SAMPLES = 16


def identity_beats_base(candidate: dict, plain: dict, margin: float = IDENTITY_MARGIN) -> bool:
    return candidate["identity"] - plain["identity"] >= margin


@pytest.fixture(scope="module")
def world():
    with autograd_safe_attention():
        encoder = WordEncoder()
        unet, _ = base.load_or_pretrain(base.QUICK_PRETRAIN, encoder, log=None)
        evaluator, _ = train_evaluator()
        data = training_data(reference_scenes(seed=3, with_distractor=False), encoder, remove_distractor=False)
        p3s, _ = train_p3s_model(unet, data, runs.DEFAULT_TRAIN)
        with torch.no_grad():
            hint = p3s.encoder(data.tokens, data.mask_grids, data.latents, data.latent_masks)
        plain, _ = score(Generator(unet), evaluator, encoder, SAMPLES)
        yield {"unet": unet, "evaluator": evaluator, "encoder": encoder, "p3s": p3s, "hint": hint, "plain": plain}


def test_p3s_identity_beats_the_plain_base(world):
    with autograd_safe_attention():
        scores, _ = score(
            Generator(world["unet"], world["p3s"], world["hint"]), world["evaluator"], world["encoder"], SAMPLES
        )
    assert identity_beats_base(scores, world["plain"]), (scores, world["plain"])


def test_the_identity_check_fails_with_the_injection_forced_to_zero(world):
    zeroed = copy.deepcopy(world["p3s"])
    with torch.no_grad():
        for param in zeroed.injection.parameters():
            param.zero_()
    with autograd_safe_attention():
        scores, _ = score(
            Generator(world["unet"], zeroed, world["hint"]), world["evaluator"], world["encoder"], SAMPLES
        )
    assert not identity_beats_base(scores, world["plain"]), (scores, world["plain"])
    assert scores["identity"] == pytest.approx(world["plain"]["identity"])
