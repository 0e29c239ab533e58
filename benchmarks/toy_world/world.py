"""The toy world: one or two flat objects on a flat background, rendered at any size.

A scene is a background colour plus objects (shape x colour x pattern, centre, radius).
:func:`render` draws it as RGB in [0, 1] at any size (anti-aliased by 4x supersampling), so the
same scene can be shown large (PNG grids, or images for the selection nodes) and taken to the
8x8 "latent" by :func:`to_latent` (no VAE: the world's latent is its image, RGB in [-1, 1]
plus the luminance as the fourth channel). Everything is deterministic from a seed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

LATENT_SIZE = 8
OBJECT_COLOURS = {
    "red": (0.9, 0.1, 0.1),
    "yellow": (0.95, 0.85, 0.1),
    "blue": (0.1, 0.25, 0.95),
    "white": (0.95, 0.95, 0.95),
}
BACKGROUNDS = {
    "green": (0.1, 0.55, 0.15),
    "black": (0.05, 0.05, 0.05),
    "gray": (0.5, 0.5, 0.5),
    "purple": (0.5, 0.1, 0.55),
}
SHAPES = ("circle", "square", "triangle", "diamond")
PATTERNS = ("plain", "striped")
BASE_SHAPES = ("circle", "square", "triangle")  # "diamond" is never seen in pretraining
STRIPE_DARKNESS = 0.35


@dataclass(frozen=True)
class Thing:
    shape: str
    colour: str
    pattern: str
    cx: float = 0.5
    cy: float = 0.5
    radius: float = 0.32


@dataclass(frozen=True)
class Scene:
    background: str
    things: tuple[Thing, ...]

    @property
    def main(self) -> Thing:
        return self.things[0]

    def caption(self, drop: tuple[bool, bool, bool, bool] = (False,) * 4) -> str:
        """``a red striped circle on a gray background``; ``drop`` leaves out colour/pattern/shape/background."""
        t = self.main
        words = ["a"]
        words += [] if drop[0] else [t.colour]
        words += [] if drop[1] else [t.pattern]
        words += [] if drop[2] else [t.shape]
        if not drop[3]:
            words += ["on", "a", self.background, "background"]
        return " ".join(words)


# (colour, pattern, shape, background) combinations kept out of pretraining: the caption check's prompts.
HELD_OUT = (
    ("red", "striped", "square", "gray"),
    ("yellow", "plain", "circle", "purple"),
    ("blue", "striped", "triangle", "black"),
    ("white", "plain", "square", "green"),
    ("red", "plain", "triangle", "green"),
    ("yellow", "striped", "triangle", "gray"),
    ("blue", "plain", "circle", "purple"),
    ("white", "striped", "circle", "black"),
)


def base_combinations() -> list[tuple[str, str, str, str]]:
    """Every pretraining (colour, pattern, shape, background): base shapes, held-out ones removed."""
    held = set(HELD_OUT)
    combos = itertools.product(OBJECT_COLOURS, PATTERNS, BASE_SHAPES, BACKGROUNDS)
    return [c for c in combos if c not in held]


def jittered(thing: Thing, gen: torch.Generator, shift: float = 0.08, scale: float = 0.06) -> Thing:
    """The same object moved by up to ``shift`` and resized by up to ``scale`` (seeded)."""
    u = torch.rand(3, generator=gen) * 2 - 1
    return replace(
        thing,
        cx=thing.cx + shift * float(u[0]),
        cy=thing.cy + shift * float(u[1]),
        radius=thing.radius * (1 + scale * float(u[2])),
    )


def random_scene(gen: torch.Generator, combos: list[tuple[str, str, str, str]]) -> Scene:
    """One scene of a random combination with jittered position and size."""
    colour, pattern, shape, background = combos[int(torch.randint(len(combos), (1,), generator=gen))]
    return Scene(background, (jittered(Thing(shape, colour, pattern), gen),))


def _shape_mask(thing: Thing, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    dx, dy, r = (xs - thing.cx) / thing.radius, (ys - thing.cy) / thing.radius, 1.0
    if thing.shape == "circle":
        inside = dx**2 + dy**2 <= r
    elif thing.shape == "square":
        inside = torch.maximum(dx.abs(), dy.abs()) <= 0.85
    elif thing.shape == "triangle":
        inside = (dy <= 0.9) & (dy >= -1.0) & (dx.abs() <= (dy + 1.0) * 0.55)
    elif thing.shape == "diamond":
        inside = dx.abs() + dy.abs() <= 1.15
    else:
        raise ValueError(f"Unknown shape {thing.shape!r}; choose one of {SHAPES}.")
    return inside.float()


def _layers(scene: Scene, size: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    fine = size * 4
    coords = (torch.arange(fine, dtype=torch.float32) + 0.5) / fine
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    image = torch.tensor(BACKGROUNDS[scene.background]).view(3, 1, 1).expand(3, fine, fine).clone()
    masks = []
    for thing in scene.things:
        mask = _shape_mask(thing, xs, ys)
        colour = torch.tensor(OBJECT_COLOURS[thing.colour]).view(3, 1, 1)
        if thing.pattern == "striped":
            stripe = (torch.floor(ys * LATENT_SIZE) % 2 == 1).float()
            colour = colour * (1 - (1 - STRIPE_DARKNESS) * stripe)
        image = image * (1 - mask) + colour * mask
        masks.append(mask)
    return image, masks


def render(scene: Scene, size: int = LATENT_SIZE) -> torch.Tensor:
    """RGB ``[3, size, size]`` in [0, 1]."""
    image, _ = _layers(scene, size)
    return F.avg_pool2d(image.unsqueeze(0), 4).squeeze(0)


def object_mask(scene: Scene, index: int = 0, size: int = LATENT_SIZE) -> torch.Tensor:
    """Coverage ``[size, size]`` in [0, 1] of object ``index`` (what points -> RNGR mask should find)."""
    _, masks = _layers(scene, size)
    return F.avg_pool2d(masks[index].view(1, 1, *masks[index].shape), 4).view(size, size)


def to_latent(rgb: torch.Tensor) -> torch.Tensor:
    """RGB ``[..., 3, h, w]`` in [0, 1] -> the world's 4-channel latent in [-1, 1]."""
    luma = rgb.mean(dim=-3, keepdim=True)
    return torch.cat([rgb, luma], dim=-3) * 2 - 1


def from_latent(latent: torch.Tensor) -> torch.Tensor:
    """The world's latent -> RGB in [0, 1] (the fourth channel is dropped)."""
    return ((latent[..., :3, :, :] + 1) / 2).clamp(0, 1)


def latents(scenes: list[Scene]) -> torch.Tensor:
    """``[N, 4, 8, 8]`` latents of ``scenes``."""
    return torch.stack([to_latent(render(s)) for s in scenes])
