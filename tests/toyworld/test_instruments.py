"""The toy world's instruments: the model-free reader, the augmented evaluator, their agreement.

The reader (analysis by synthesis with the world's renderer) must read the world's own renders;
the evaluator, trained on renders drawn as models get them wrong, must read a white object on
an off-palette background as white; ``metrics.score`` must report both readings and their
agreement; the selection stand-in's lightness features must raise the subject-mask IoU of an
achromatic subject. No base is trained here.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from benchmarks.toy_world import evaluator as judge
from benchmarks.toy_world import metrics, reader, world
from benchmarks.toy_world.subject import DISTRACTOR, SUBJECT

MIN_READER_ACCURACY = 0.99
MIN_WHITE_READ = 0.97  # the earlier clean-only evaluator read 0.91 of these as white (docs/toy_world.md)
ALL_COMBOS = list(itertools.product(world.OBJECT_COLOURS, world.PATTERNS, world.SHAPES, world.BACKGROUNDS))


def _scenes(seed: int, count: int) -> list[world.Scene]:
    gen = torch.Generator().manual_seed(seed)
    return [world.random_scene(gen, ALL_COMBOS) for _ in range(count)]


def test_the_vectorised_renderer_draws_what_the_world_draws():
    scenes = _scenes(11, 40)
    things = [s.main for s in scenes]
    albedo, coverage = reader.render_layers(
        [t.shape for t in things],
        [t.pattern for t in things],
        torch.tensor([t.cx for t in things]),
        torch.tensor([t.cy for t in things]),
        torch.tensor([t.radius for t in things]),
    )
    colours = torch.tensor([world.OBJECT_COLOURS[t.colour] for t in things]).view(-1, 3, 1, 1)
    backgrounds = torch.tensor([world.BACKGROUNDS[s.background] for s in scenes]).view(-1, 3, 1, 1)
    drawn = colours * albedo.unsqueeze(1) + backgrounds * (1 - coverage.unsqueeze(1))
    torch.testing.assert_close(drawn, torch.stack([world.render(s) for s in scenes]), atol=1e-5, rtol=0)


def test_the_reader_reads_clean_renders():
    scenes = _scenes(2025, 256)
    read = reader.Reader().predict(world.latents(scenes))
    truth = {
        "colour": [s.main.colour for s in scenes],
        "pattern": [s.main.pattern for s in scenes],
        "shape": [s.main.shape for s in scenes],
        "background": [s.background for s in scenes],
    }
    for key, values in truth.items():
        accuracy = sum(a == b for a, b in zip(read[key], values, strict=True)) / len(values)
        assert accuracy >= MIN_READER_ACCURACY, (key, accuracy)
    joint = reader.agreement(read, truth)
    assert joint >= MIN_READER_ACCURACY, joint


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    return judge.train_evaluator()


def test_the_evaluator_reports_clean_and_augmented_accuracy(trained):
    _, report = trained
    assert set(report.clean_accuracy) == set(judge.ATTRIBUTES)
    assert set(report.augmented_accuracy) == set(judge.ATTRIBUTES)
    assert report.clean_accuracy["colour"] >= 0.99 and report.clean_accuracy["background"] >= 0.99
    for value in report.augmented_accuracy.values():
        assert 0.0 <= value <= 1.0


def test_the_evaluator_is_deterministic_by_seed():
    x, _ = judge.augmented_batch(torch.Generator().manual_seed(4), 8, ALL_COMBOS)
    y, _ = judge.augmented_batch(torch.Generator().manual_seed(4), 8, ALL_COMBOS)
    torch.testing.assert_close(x, y)


def test_the_evaluator_reads_a_white_object_on_an_off_palette_background_as_white(trained):
    model, _ = trained
    whites = [c for c in ALL_COMBOS if c[0] == "white"]
    # Held out (a seed the training never draws from): every scene augmented, most backgrounds
    # moved off the palette, colours dimmed or shifted, contrast lowered, blurred.
    x, _ = judge.augmented_batch(torch.Generator().manual_seed(90210), 256, whites, clean_share=0.0)
    read = model.predict(x)["colour"]
    assert read.count("white") / len(read) >= MIN_WHITE_READ, {c: read.count(c) for c in set(read)}


class _Rendered(metrics.Generator):
    """A stand-in model whose every sample is a render of ``thing`` (no U-Net)."""

    def __init__(self, things: list[world.Thing]):
        super().__init__(unet=None)
        self.things = things

    def sample(self, prompt, count, encoder, seed, steps, cfg):
        gen = torch.Generator().manual_seed(seed)
        backgrounds = list(world.BACKGROUNDS)
        scenes = [
            world.Scene(backgrounds[i % 4], (world.jittered(self.things[i % len(self.things)], gen),))
            for i in range(count)
        ]
        return world.latents(scenes)

    def denoise_error(self, x0, prompt, encoder, seed):
        return 0.0


@pytest.mark.parametrize("things", [[SUBJECT], [SUBJECT, DISTRACTOR]])
def test_score_reports_the_readers_identity_and_their_agreement(trained, things):
    model, _ = trained
    scores, _ = metrics.score(_Rendered(things), model, encoder=None, samples=16)
    for key in ("identity", "lookalike_read", "distractor_seen", "edit_identity"):
        assert key in scores  # the earlier keys stay
    for key in ("reader_identity", "reader_lookalike_read", "reader_agreement"):
        assert 0.0 <= scores[key] <= 1.0, (key, scores[key])
    share = 1.0 / len(things)  # of the samples that are the subject
    assert scores["reader_identity"] >= share - 1e-6
    assert abs(scores["reader_lookalike_read"] - (1 - share)) < 1e-6
    # The reader reads clean renders right, so the two agree exactly where the evaluator reads
    # each sample as what it is (the subject or the look-alike): one sample's slack for the reader.
    evaluator_right = scores["subject_read"] + (scores["lookalike_read"] if len(things) > 1 else 0.0)
    assert abs(scores["reader_agreement"] - evaluator_right) <= 1 / 16 + 1e-6, scores


def test_the_selection_stand_ins_lightness_features_raise_an_achromatic_subjects_iou(monkeypatch):
    from benchmarks.toy_world import selection
    from benchmarks.toy_world.host import setup_torch
    from benchmarks.toy_world.subject import reference_scenes

    setup_torch()
    subject, lookalike = world.Thing("square", "white", "striped"), world.Thing("square", "white", "plain")
    scenes = reference_scenes(selection.REFERENCE_SEED, True, subject, lookalike)

    def mean_iou() -> float:
        rows = selection.measure(scenes, selection.select(scenes))
        return sum(r["subject_iou"] for r in rows) / len(rows)

    with_objects = mean_iou()
    # The lightness features' own share, apart from the object shapes added after them (which
    # separate an achromatic object from its background by themselves).
    monkeypatch.setattr(selection, "OBJECT_WEIGHT", 0.0)
    with_lightness = mean_iou()
    monkeypatch.setattr(selection, "VALUE_WEIGHT", 0.0)  # the earlier stand-in (orthonormal projection)
    without = mean_iou()
    assert with_lightness >= without + 0.01, (with_lightness, without)
    assert with_objects >= with_lightness - 0.02, (with_objects, with_lightness)
