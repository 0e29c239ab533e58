"""The scores of one run, all from fixed seeds and noises (see docs/toy_world.md).

* identity: share of samples of "a photo of sks" whose colour, pattern and shape (read by the
  evaluator) are the subject's, averaged over the three attributes; colour alone also kept.
* identity gap: conditional denoising error on held-out look-alike scenes minus that on
  held-out subject scenes, same fixed noises and timesteps; > 0 = the model prefers the subject.
* editability: share of samples of "a photo of sks on a green background" on green.
* selectivity: ``lookalike_read`` / ``subject_read``: share of samples the evaluator reads as
  the look-alike / the subject (colour, pattern and shape together: a joint score, whose floor
  is low for every pair). This is the look-alike measure. ``distractor_seen`` (share of samples
  in which the look-alike's colour shows, >= 3 pixels nearest it in the palette) is superseded
  by it and kept only for continuity with earlier tables: its floor is high (dark backgrounds'
  pixels count) and it says nothing about pattern or shape.
* the second reader (``reader.py``, model-free analysis by synthesis): ``reader_identity``,
  ``reader_lookalike_read`` as above but read by it, and ``reader_agreement``, the share of
  samples where the evaluator and the reader agree on colour, pattern and shape together.
* diversity: mean pairwise RMS distance between the "a photo of sks" samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import evaluator as judge
from . import world
from .reader import agreement, default_reader
from .sampling import euler_sample, predict_noise
from .subject import DISTRACTOR, EDIT_PROMPT, PROMPT, SUBJECT, test_scenes
from .text import WordEncoder

THING_ATTRIBUTES = ("colour", "pattern", "shape")


@dataclass
class Generator:
    """A model to score: the base or a fine-tuned U-Net, with or without P3S injected."""

    unet: torch.nn.Module
    p3s: object = None
    hint: torch.Tensor | None = None
    schedule: object = None

    def sample(self, prompt: str, count: int, encoder: WordEncoder, seed: int, steps: int, cfg: float):
        shape = (count, 4, world.LATENT_SIZE, world.LATENT_SIZE)
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        context = encoder.encode([prompt] * count)
        return euler_sample(
            self.unet, noise, context, encoder.encode([""]), steps, cfg, self.p3s, self.hint, self.schedule
        )

    def denoise_error(self, x0: torch.Tensor, prompt: str, encoder: WordEncoder, seed: int) -> float:
        gen = torch.Generator().manual_seed(seed)
        context = encoder.encode([prompt] * x0.shape[0])
        errors = []
        for t in torch.linspace(100, 900, 5).long():
            noise = torch.randn(x0.shape, generator=gen)
            ts = t.repeat(x0.shape[0])
            pred = predict_noise(self.unet, x0, noise, ts, context, self.p3s, self.hint, self.schedule)
            errors.append(float(((pred - noise) ** 2).mean()))
        return sum(errors) / len(errors)


def score(
    gen: Generator,
    evaluator: judge.Evaluator,
    encoder: WordEncoder,
    samples: int,
    seed: int = 2024,
    steps: int = 20,
    cfg: float = 7.5,
    subject: world.Thing = SUBJECT,
    lookalike: world.Thing = DISTRACTOR,
) -> tuple[dict, torch.Tensor]:
    """All metrics of ``gen`` for ``subject`` and its ``lookalike``; also returns its "a photo of
    sks" samples (for the PNG grid)."""
    shots = gen.sample(PROMPT, samples, encoder, seed, steps, cfg)
    edits = gen.sample(EDIT_PROMPT, samples, encoder, seed + 1, steps, cfg)
    read, read_edit = evaluator.predict(shots), evaluator.predict(edits)
    match = {k: _rate(read[k], getattr(subject, k)) for k in THING_ATTRIBUTES}
    second = default_reader().predict(shots)
    subject_x = world.latents(test_scenes(subject, seed=77))
    distractor_x = world.latents(test_scenes(lookalike, seed=77))
    err_subject = gen.denoise_error(subject_x, PROMPT, encoder, seed=5)
    err_distractor = gen.denoise_error(distractor_x, PROMPT, encoder, seed=5)
    flat = shots.flatten(1)
    pairwise = torch.cdist(flat, flat) / flat.shape[1] ** 0.5
    metrics = {
        "identity": sum(match.values()) / 3,
        "colour": match["colour"],
        "pattern": match["pattern"],
        "shape": match["shape"],
        "identity_gap": err_distractor - err_subject,
        "subject_error": err_subject,
        "edit_green": _rate(read_edit["background"], "green"),
        "edit_identity": sum(_rate(read_edit[k], getattr(subject, k)) for k in THING_ATTRIBUTES) / 3,
        "distractor_seen": float(judge.colour_presence(shots, lookalike.colour).float().mean()),
        "lookalike_read": read_as(read, lookalike),
        "subject_read": read_as(read, subject),
        "reader_identity": sum(_rate(second[k], getattr(subject, k)) for k in THING_ATTRIBUTES) / 3,
        "reader_lookalike_read": read_as(second, lookalike),
        "reader_agreement": agreement(read, second),
        "diversity": float(pairwise.sum() / (samples * (samples - 1))),
    }
    return metrics, shots


def caption_check(
    unet: torch.nn.Module, evaluator: judge.Evaluator, encoder: WordEncoder, per_prompt: int = 8, seed: int = 99
) -> dict[str, float]:
    """Accuracy of the base on the held-out captions: colour, background (the check), pattern, shape."""
    gen = Generator(unet)
    hits = {k: 0 for k in judge.ATTRIBUTES}
    for i, (colour, pattern, shape, background) in enumerate(world.HELD_OUT):
        scene = world.Scene(background, (world.Thing(shape, colour, pattern),))
        read = evaluator.predict(gen.sample(scene.caption(), per_prompt, encoder, seed + i, 20, 7.5))
        truth = {"colour": colour, "pattern": pattern, "shape": shape, "background": background}
        for k in hits:
            hits[k] += sum(v == truth[k] for v in read[k])
    total = per_prompt * len(world.HELD_OUT)
    return {k: v / total for k, v in hits.items()}


def read_as(read: dict[str, list[str]], thing: world.Thing) -> float:
    """Share of samples the evaluator reads as ``thing``: its colour, pattern and shape together."""
    hits = [all(read[k][i] == getattr(thing, k) for k in THING_ATTRIBUTES) for i in range(len(read["colour"]))]
    return sum(hits) / len(hits)


def _rate(values: list[str], wanted: str) -> float:
    return sum(v == wanted for v in values) / len(values)
