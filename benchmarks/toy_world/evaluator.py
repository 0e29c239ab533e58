"""The judge: a tiny classifier of the world's attributes, trained on rendered scenes only.

An MLP on the 8x8x4 latent with one head per attribute (object colour, pattern, shape,
background), trained on jittered single-object scenes of every combination (the novel shape
included). It never sees a model's output while training, but (``augment``, the default, our
addition) most of its training scenes are drawn the way models get them wrong: off-palette and
uneven backgrounds, shifted and dimmed object colours, global colour shifts and contrast
changes, blur, faint stripes, objects moved, resized and partly cut, and Gaussian noise of
varied strength. :class:`EvaluatorReport` gives its accuracy on clean held-out scenes and on
held-out scenes augmented the same way. ``augment=False`` is the earlier judge (clean scenes
with noise only). ``reader.py`` is a second, model-free judge; :func:`colour_presence` is the
earlier pixel-colour reading (``distractor_seen``), kept for continuity.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import world
from .reader import render_layers

ATTRIBUTES = {
    "colour": tuple(world.OBJECT_COLOURS),
    "pattern": world.PATTERNS,
    "shape": world.SHAPES,
    "background": tuple(world.BACKGROUNDS),
}


class Evaluator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        # [our addition] Two 3x3 convolutions before the MLP: the same edge or stripe anywhere in
        # the frame (models draw the object off-centre), which the MLP alone learnt position by position.
        self.body = nn.Sequential(
            nn.Conv2d(4, 32, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.GELU(),
            nn.Flatten(),
            nn.Linear(32 * 64, 192),
            nn.GELU(),
            nn.Linear(192, 192),
            nn.GELU(),
        )
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
    augmented_accuracy: dict[str, float] | None = None  # on held-out augmented scenes (None: not measured)


def _labels(scene: world.Scene) -> dict[str, int]:
    t = scene.main
    values = {"colour": t.colour, "pattern": t.pattern, "shape": t.shape, "background": scene.background}
    return {k: ATTRIBUTES[k].index(v) for k, v in values.items()}


def _batch(gen: torch.Generator, n: int, combos) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    scenes = [world.random_scene(gen, combos) for _ in range(n)]
    labels = [_labels(s) for s in scenes]
    return world.latents(scenes), {k: torch.tensor([lab[k] for lab in labels]) for k in ATTRIBUTES}


def _uniform(gen: torch.Generator, n: int, low: float, high: float, *shape: int) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, *shape, generator=gen)


def _chance(gen: torch.Generator, n: int, p: float) -> torch.Tensor:
    return (torch.rand(n, generator=gen) < p).float()


CLEAN_SHARE = 0.25  # of an augmented batch: the world's own scenes (noise only)
MAX_AUGMENTED_NOISE = 0.35


def augmented_batch(
    gen: torch.Generator, n: int, combos, clean_share: float = CLEAN_SHARE
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``n`` latents drawn as models draw them, and their labels (the world's attributes).

    [our addition] Per scene, each with its own chance: the world's jitter or a wider one
    (centres 0.3-0.7, radii 0.22-0.44); faint or dark stripes (darkness 0.15-0.6); the object's
    colour shifted per channel (sd 0.07) and dimmed or brightened (x 0.75-1.1); the background
    moved off the palette (up to +-0.25 per channel) and made uneven (a ramp up to +-0.15); part
    of the object cut away (a band of rows or columns set to the background); a global colour
    shift (+-0.1), a contrast change (x 0.6-1.3 around the mean), a blur (sigma 0.3-0.9 px);
    then Gaussian noise of sd 0-0.35 on the latent. A ``clean_share`` of the scenes keeps only
    the world's jitter (and the noise).
    """
    picks = torch.randint(len(combos), (n,), generator=gen).tolist()
    colour, pattern, shape, background = (list(v) for v in zip(*[combos[i] for i in picks], strict=True))
    labels = {
        "colour": torch.tensor([ATTRIBUTES["colour"].index(v) for v in colour]),
        "pattern": torch.tensor([ATTRIBUTES["pattern"].index(v) for v in pattern]),
        "shape": torch.tensor([ATTRIBUTES["shape"].index(v) for v in shape]),
        "background": torch.tensor([ATTRIBUTES["background"].index(v) for v in background]),
    }
    aug = 1 - _chance(gen, n, clean_share)  # 1: this scene is augmented

    def some(p: float) -> torch.Tensor:
        return aug * _chance(gen, n, p)

    wide = some(0.5)
    cx = 0.5 + _uniform(gen, n, -1, 1) * (0.08 + 0.12 * wide)
    cy = 0.5 + _uniform(gen, n, -1, 1) * (0.08 + 0.12 * wide)
    radius = 0.32 * (1 + 0.06 * _uniform(gen, n, -1, 1)) * (1 - wide) + _uniform(gen, n, 0.22, 0.44) * wide
    faint = some(0.5)
    darkness = world.STRIPE_DARKNESS * (1 - faint) + _uniform(gen, n, 0.15, 0.6) * faint
    albedo, coverage = render_layers(shape, pattern, cx, cy, radius, stripe_darkness=darkness)
    cut = some(0.15).view(n, 1, 1)
    side = torch.randint(4, (n, 1, 1), generator=gen)
    width = torch.randint(1, 4, (n, 1, 1), generator=gen)
    index = torch.arange(world.LATENT_SIZE)
    rows, cols = index.view(1, -1, 1), index.view(1, 1, -1)
    line = torch.where(side < 2, rows, cols)  # cut along rows (sides 0, 1) or columns (2, 3)
    band = torch.where(side % 2 == 0, line < width, line >= world.LATENT_SIZE - width).float()
    # The band only where the object is: a side of the object is cut, not the frame.
    keep = 1 - cut * band * (coverage > 0).float().amax(dim=(1, 2), keepdim=True)
    albedo, coverage = albedo * keep, coverage * keep

    obj = torch.tensor([world.OBJECT_COLOURS[c] for c in colour])
    obj = obj + some(0.5).view(n, 1) * 0.07 * torch.randn(n, 3, generator=gen)
    obj = obj * (1 + some(0.4).view(n, 1) * _uniform(gen, n, -0.25, 0.1, 1))
    bg = torch.tensor([world.BACKGROUNDS[b] for b in background])
    bg = (bg + some(0.7).view(n, 1) * _uniform(gen, n, -0.25, 0.25, 3)).clamp(0, 1)
    coords = (torch.arange(world.LATENT_SIZE, dtype=torch.float32) + 0.5) / world.LATENT_SIZE - 0.5
    ramp = _uniform(gen, n, -0.3, 0.3, 2) * some(0.3).view(n, 1)
    uneven = ramp[:, 0].view(n, 1, 1) * coords.view(1, -1, 1) + ramp[:, 1].view(n, 1, 1) * coords.view(1, 1, -1)
    rgb = obj.view(n, 3, 1, 1) * albedo.unsqueeze(1) + (bg.view(n, 3, 1, 1) + uneven.unsqueeze(1)) * (
        1 - coverage.unsqueeze(1)
    )
    rgb = rgb + some(0.5).view(n, 1, 1, 1) * _uniform(gen, n, -0.1, 0.1, 3, 1, 1)
    mean = rgb.mean(dim=(1, 2, 3), keepdim=True)
    contrast = 1 + some(0.5).view(n, 1, 1, 1) * (_uniform(gen, n, 0.6, 1.3, 1, 1, 1) - 1)
    rgb = (rgb - mean) * contrast + mean
    soft = some(0.4)
    sigma = _uniform(gen, n, 0.3, 0.9)
    blurred = _blur(rgb, sigma)
    rgb = rgb * (1 - soft.view(n, 1, 1, 1)) + blurred * soft.view(n, 1, 1, 1)
    latent = world.to_latent(rgb.clamp(-0.1, 1.1))
    return latent, labels


def _blur(rgb: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``[N, 3, h, w]`` blurred by a 3x3 Gaussian of ``sigma[N]`` pixels each (edges replicated)."""
    side = torch.exp(-1 / (2 * sigma**2)).view(-1, 1, 1, 1)
    side, centre = side / (1 + 2 * side), 1 / (1 + 2 * side)
    x = F.pad(rgb, (0, 0, 1, 1), mode="replicate")
    x = centre * x[..., 1:-1, :] + side * (x[..., :-2, :] + x[..., 2:, :])
    x = F.pad(x, (1, 1, 0, 0), mode="replicate")
    return centre * x[..., 1:-1] + side * (x[..., :-2] + x[..., 2:])


def _accuracy(model: Evaluator, x: torch.Tensor, y: dict[str, torch.Tensor]) -> dict[str, float]:
    with torch.no_grad():
        out = model(x)
    return {k: float((out[k].argmax(-1) == y[k]).float().mean()) for k in ATTRIBUTES}


def _noisy(gen: torch.Generator, x: torch.Tensor, noise: float) -> torch.Tensor:
    return x + noise * torch.rand(x.shape[0], 1, 1, 1, generator=gen) * torch.randn(x.shape, generator=gen)


def train_evaluator(
    seed: int = 7, steps: int = 300, noise: float = 0.25, augment: bool = True, batch: int = 256
) -> tuple[Evaluator, EvaluatorReport]:
    """Train the judge (a few seconds on one thread) and report its accuracy on held-out scenes.

    ``augment`` (default): scenes from :func:`augmented_batch`, noise of sd up to
    ``max(noise, 0.35)``, ``batch`` scenes a step; the report gives the accuracy on clean held-out
    scenes and on augmented ones. ``augment=False``: the earlier judge (64 clean scenes a step,
    noise up to ``noise``). Deterministic from ``seed``.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    combos = list(itertools.product(world.OBJECT_COLOURS, world.PATTERNS, world.SHAPES, world.BACKGROUNDS))
    model = Evaluator()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=2e-4) if augment else None
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(steps):
        if augment:
            x, y = augmented_batch(gen, batch, combos)
            x = _noisy(gen, x, max(noise, MAX_AUGMENTED_NOISE))
        else:
            x, y = _batch(gen, 64, combos)
            x = _noisy(gen, x, noise)
        out = model(x)
        loss = sum(loss_fn(out[k], y[k]) for k in ATTRIBUTES)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if schedule is not None:
            schedule.step()
    model.eval()
    clean = _accuracy(model, *_batch(torch.Generator().manual_seed(seed + 1), 512, combos))
    held = torch.Generator().manual_seed(seed + 2)
    x, y = augmented_batch(held, 512, combos, clean_share=0.0)
    augmented = _accuracy(model, _noisy(held, x, max(noise, MAX_AUGMENTED_NOISE)), y)
    return model, EvaluatorReport(clean, augmented)


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
