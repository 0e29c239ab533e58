"""The judge: a tiny classifier of the world's attributes, trained on rendered scenes only.

An MLP on the 8x8x4 latent with one head per attribute (object colour, pattern, shape,
background), trained on jittered single-object scenes of every combination (the novel shape
included) with Gaussian noise added, so that imperfect samples are still read. It never sees
a model's output while training. :func:`colour_presence` is a second, model-free reading used
for two-object questions: how many pixels are nearest to a given object colour.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn

from . import world

ATTRIBUTES = {
    "colour": tuple(world.OBJECT_COLOURS),
    "pattern": world.PATTERNS,
    "shape": world.SHAPES,
    "background": tuple(world.BACKGROUNDS),
}


class Evaluator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(4 * 64, 192), nn.GELU(), nn.Linear(192, 192), nn.GELU())
        self.heads = nn.ModuleDict({k: nn.Linear(192, len(v)) for k, v in ATTRIBUTES.items()})

    def forward(self, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(latent)
        return {k: head(h) for k, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, latent: torch.Tensor) -> dict[str, list[str]]:
        """Attribute names per sample."""
        logits = self(latent.clamp(-1.5, 1.5))
        return {k: [ATTRIBUTES[k][i] for i in v.argmax(-1).tolist()] for k, v in logits.items()}


@dataclass
class EvaluatorReport:
    clean_accuracy: dict[str, float]


def _labels(scene: world.Scene) -> dict[str, int]:
    t = scene.main
    values = {"colour": t.colour, "pattern": t.pattern, "shape": t.shape, "background": scene.background}
    return {k: ATTRIBUTES[k].index(v) for k, v in values.items()}


def _batch(gen: torch.Generator, n: int, combos) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    scenes = [world.random_scene(gen, combos) for _ in range(n)]
    labels = [_labels(s) for s in scenes]
    return world.latents(scenes), {k: torch.tensor([lab[k] for lab in labels]) for k in ATTRIBUTES}


def train_evaluator(seed: int = 7, steps: int = 300, noise: float = 0.25) -> tuple[Evaluator, EvaluatorReport]:
    """Train the judge (a few seconds on one thread) and report its accuracy on clean held-out scenes."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    combos = list(itertools.product(world.OBJECT_COLOURS, world.PATTERNS, world.SHAPES, world.BACKGROUNDS))
    model = Evaluator()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(steps):
        x, y = _batch(gen, 64, combos)
        x = x + noise * torch.rand(x.shape[0], 1, 1, 1, generator=gen) * torch.randn(x.shape, generator=gen)
        out = model(x)
        loss = sum(loss_fn(out[k], y[k]) for k in ATTRIBUTES)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, y = _batch(torch.Generator().manual_seed(seed + 1), 512, combos)
    with torch.no_grad():
        out = model(x)
    acc = {k: float((out[k].argmax(-1) == y[k]).float().mean()) for k in ATTRIBUTES}
    return model, EvaluatorReport(acc)


def colour_presence(latent: torch.Tensor, colour: str, min_pixels: int = 3) -> torch.Tensor:
    """Per sample: whether at least ``min_pixels`` pixels are nearest to ``colour`` among the palette.

    The palette holds every object and background colour plus the striped (darkened) object
    colours, so stripes are not mistaken for another colour.
    """
    palette = {f"bg:{k}": v for k, v in world.BACKGROUNDS.items()}
    for name, rgb in world.OBJECT_COLOURS.items():
        palette[name] = rgb
        palette[f"{name}:dark"] = tuple(c * world.STRIPE_DARKNESS for c in rgb)
    names = list(palette)
    colours = torch.tensor([palette[n] for n in names])  # [P, 3]
    rgb = world.from_latent(latent).permute(0, 2, 3, 1).reshape(latent.shape[0], -1, 3)
    nearest = torch.cdist(rgb, colours.unsqueeze(0).expand(rgb.shape[0], -1, -1)).argmin(-1)
    wanted = torch.tensor([i for i, n in enumerate(names) if n.split(":")[0] == colour])
    hits = torch.isin(nearest, wanted).sum(-1)
    return hits >= min_pixels
