"""The subject to learn, its look-alike, and the reference sets built from them.

The subject is a yellow striped diamond: a shape the base never saw. The look-alike
(distractor) is the same striped diamond in blue. References are captioned "a photo of sks";
the stand-in for CLIP patch tokens is a fixed random projection of each latent pixel plus a
fixed per-position vector (64 tokens on the 8x8 grid, no CLS). The subject mask is either the
renderer's exact coverage of the subject, or (``points=True``) what the pack's P3S Points ->
RNGR Mask -> P3S Inpaint path gives from one positive and one negative point (``selection.py``).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from p3s_core.training.settings import TrainingData

from . import world
from .text import WordEncoder

SUBJECT = world.Thing("diamond", "yellow", "striped")
DISTRACTOR = world.Thing("diamond", "blue", "striped")
REFERENCE_BACKGROUNDS = ("black", "gray", "purple", "gray")
PROMPT = "a photo of sks"
EDIT_PROMPT = "a photo of sks on a green background"
TOKEN_DIM = 16
ENCODER_CONFIG = {"token_dim": TOKEN_DIM, "inner_dim": 16, "heads": 2, "hint_region": "subject"}


def reference_scenes(
    seed: int, with_distractor: bool, subject: world.Thing = SUBJECT, lookalike: world.Thing = DISTRACTOR
) -> list[world.Scene]:
    """4 scenes of ``subject`` (and ``lookalike`` beside it, sides alternating), jittered."""
    gen = torch.Generator().manual_seed(seed)
    scenes = []
    for i, background in enumerate(REFERENCE_BACKGROUNDS):
        if not with_distractor:
            scenes.append(world.Scene(background, (world.jittered(subject, gen),)))
            continue
        left, right = (0.28, 0.72) if i % 2 == 0 else (0.72, 0.28)
        first = world.jittered(replace(subject, cx=left, radius=0.22), gen, shift=0.03)
        other = world.jittered(replace(lookalike, cx=right, radius=0.22), gen, shift=0.03)
        scenes.append(world.Scene(background, (first, other)))
    return scenes


def without_distractor(scene: world.Scene) -> world.Scene:
    """The scene with every object but the subject painted over by the background (ideal inpainting)."""
    return world.Scene(scene.background, scene.things[:1])


def clip_standin_tokens(latents: torch.Tensor, seed: int = 11) -> torch.Tensor:
    """``[R, 64, TOKEN_DIM]``: fixed random projection of each latent pixel + a fixed position vector."""
    gen = torch.Generator().manual_seed(seed)
    proj = torch.randn(latents.shape[1], TOKEN_DIM, generator=gen)
    pos = 0.5 * torch.randn(latents.shape[-2] * latents.shape[-1], TOKEN_DIM, generator=gen)
    pixels = latents.flatten(2).transpose(1, 2)  # [R, 64, 4]
    return pixels @ proj + pos


def training_data(
    scenes: list[world.Scene],
    encoder: WordEncoder,
    remove_distractor: bool,
    selected: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> TrainingData:
    """P3S's training inputs for ``scenes``.

    ``remove_distractor``: the look-alike ideally inpainted away, exact subject masks.
    ``selected``: ``(latents, masks)`` from the selection path instead (``selection.py``).
    """
    if selected is not None:
        lat, masks = selected
    else:
        lat = world.latents([without_distractor(s) if remove_distractor else s for s in scenes])
        masks = torch.stack([world.object_mask(s, 0) for s in scenes])
    context = encoder.encode([PROMPT] * len(scenes))
    return TrainingData(lat, clip_standin_tokens(lat), masks, context, encoder.encode([""]), masks)


def test_scenes(thing: world.Thing, seed: int, count: int = 8) -> list[world.Scene]:
    """Held-out single-object scenes of ``thing`` on every background (for the identity gap)."""
    gen = torch.Generator().manual_seed(seed)
    backgrounds = list(world.BACKGROUNDS)
    return [world.Scene(backgrounds[i % 4], (world.jittered(thing, gen),)) for i in range(count)]
