"""A second, model-free judge: analysis by synthesis with the world's own renderer.

[our addition] For each sample, every object the world can draw (shape x pattern x colour, on a
grid of centres and sizes) is rendered once into a bank, and the sample is explained as that
object over a flat background whose colour is fitted by least squares (per channel, free, so a
sample's off-palette background does not change what the object is read as). The best fit over
the bank is the reading; its background is the palette background nearest the fitted colour.
Nothing is trained, so the reader cannot learn the evaluator's blind spots; it can only fail
where a sample is no rendered object at all (two objects, smears).

:func:`render_layers` is the world's renderer vectorised over many objects (4x supersampling,
stripes on the latent rows, as ``world.render``); the evaluator draws its augmented training
scenes with it too.
"""

from __future__ import annotations

import functools
import itertools

import torch
import torch.nn.functional as F

from . import world

ATTRIBUTES = {
    "colour": tuple(world.OBJECT_COLOURS),
    "pattern": world.PATTERNS,
    "shape": world.SHAPES,
    "background": tuple(world.BACKGROUNDS),
}
# The bank's grid of object centres (both axes) and radii: covers the world's jitter (centres
# 0.42-0.58, radii 0.30-0.34), the look-alike references' sides (0.25-0.75, radius 0.22) and
# what models draw beyond that.
CENTRES = tuple(round(0.2 + 0.025 * i, 3) for i in range(25))
RADII = (0.2, 0.24, 0.28, 0.3, 0.32, 0.34, 0.36, 0.4, 0.44, 0.48)
BLURS = (0.0,)  # Gaussian blurs of the bank (latent pixels); a 0.7 blur read no better on the base's samples
SUPERSAMPLE = 4


def render_layers(
    shapes: list[str],
    patterns: list[str],
    cx: torch.Tensor,
    cy: torch.Tensor,
    radius: torch.Tensor,
    size: int = world.LATENT_SIZE,
    stripe_darkness: torch.Tensor | float = world.STRIPE_DARKNESS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(albedo, coverage)``, each ``[N, size, size]``, of N single objects drawn as ``world.render`` does.

    A pixel of a scene with object colour ``c`` on background ``b`` is ``c * albedo + b * (1 -
    coverage)``: albedo is the coverage weighted by the stripes' darkness.
    """
    fine = size * SUPERSAMPLE
    coords = (torch.arange(fine, dtype=torch.float32) + 0.5) / fine
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    n = len(shapes)
    cx, cy, radius = (torch.as_tensor(v, dtype=torch.float32).view(n, 1, 1) for v in (cx, cy, radius))
    dx, dy = (xs - cx) / radius, (ys - cy) / radius  # [N, fine, fine]
    mask = torch.zeros(n, fine, fine)
    unit = {}
    for shape in set(shapes):
        rows = torch.tensor([s == shape for s in shapes])
        unit[shape] = world._shape_mask(world.Thing(shape, "white", "plain", 0.0, 0.0, 1.0), dx[rows], dy[rows])
        mask[rows] = unit[shape]
    stripe = (torch.floor(ys * world.LATENT_SIZE) % 2 == 1).float()
    striped = torch.tensor([p == "striped" for p in patterns], dtype=torch.float32).view(n, 1, 1)
    darkness = torch.as_tensor(stripe_darkness, dtype=torch.float32).reshape(-1, 1, 1)
    shade = 1 - striped * (1 - darkness) * stripe
    albedo = F.avg_pool2d((mask * shade).unsqueeze(1), SUPERSAMPLE).squeeze(1)
    coverage = F.avg_pool2d(mask.unsqueeze(1), SUPERSAMPLE).squeeze(1)
    return albedo, coverage


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """``[N, h, w]`` blurred by a 3x3 Gaussian of ``sigma`` pixels (edges replicated); 0: unchanged."""
    if sigma <= 0:
        return images
    taps = torch.exp(-torch.tensor([1.0, 0.0, 1.0]) / (2 * sigma**2))
    kernel = (taps / taps.sum()).view(1, 1, 3)
    x = F.pad(images.unsqueeze(1), (1, 1, 1, 1), mode="replicate")
    x = F.conv2d(x, kernel.unsqueeze(-1).transpose(-1, -2))  # along rows
    x = F.conv2d(x, kernel.unsqueeze(-1))  # along columns
    return x.squeeze(1)


@functools.lru_cache(maxsize=2)
def bank(centres: tuple[float, ...] = CENTRES, radii: tuple[float, ...] = RADII, blurs: tuple[float, ...] = BLURS):
    """The render bank: ``(labels, albedo [T, 64], background weight [T, 64])``, built once.

    A label is ``(pattern, shape, cx, cy, radius, blur)``.
    """
    shapes = list(itertools.product(world.PATTERNS, world.SHAPES, centres, centres, radii))
    albedo, coverage = render_layers(
        [lab[1] for lab in shapes],
        [lab[0] for lab in shapes],
        torch.tensor([lab[2] for lab in shapes]),
        torch.tensor([lab[3] for lab in shapes]),
        torch.tensor([lab[4] for lab in shapes]),
    )
    labels = [(*lab, sigma) for sigma in blurs for lab in shapes]
    albedo = torch.cat([blur(albedo, sigma) for sigma in blurs])
    weight = torch.cat([1 - blur(coverage, sigma) for sigma in blurs])
    return labels, albedo.flatten(1), weight.flatten(1)


def fit(latent: torch.Tensor) -> dict[str, torch.Tensor]:
    """Least-squares fits of ``latent [N, 4, 8, 8]`` against the bank, every palette colour.

    Returns ``residual [N, T, C]`` (sum over RGB of the squared error with the best background
    per channel) and ``background [N, T, C, 3]`` (that background), T templates, C colours.
    """
    _, albedo, weight = bank()
    x = world.from_latent(latent.float()).flatten(2)  # [N, 3, 64] RGB in [0, 1]
    colours = torch.tensor(list(world.OBJECT_COLOURS.values()))  # [C, 3]
    xa, xw = x @ albedo.T, x @ weight.T  # [N, 3, T]
    aa, aw, ww = (albedo * albedo).sum(-1), (albedo * weight).sum(-1), (weight * weight).sum(-1).clamp_min(1e-6)
    xx = (x * x).sum(-1)  # [N, 3]
    c = colours.T.view(1, 3, 1, -1)  # [1, 3, 1, C]
    # ||x - c a - b w||^2 at the best b: ||x - c a||^2 - ((x - c a) . w)^2 / (w . w)
    rest = xx.view(*xx.shape, 1, 1) - 2 * c * xa.unsqueeze(-1) + c**2 * aa.view(1, 1, -1, 1)
    along = xw.unsqueeze(-1) - c * aw.view(1, 1, -1, 1)  # [N, 3, T, C]
    residual = (rest - along**2 / ww.view(1, 1, -1, 1)).sum(1)
    background = (along / ww.view(1, 1, -1, 1)).permute(0, 2, 3, 1)
    return {"residual": residual, "background": background}


class Reader:
    """Reads colour, pattern, shape and background of samples by the best-fitting render."""

    def __init__(self, chunk: int = 16) -> None:
        self.labels = bank()[0]
        self.chunk = chunk

    @torch.no_grad()
    def predict(self, latent: torch.Tensor) -> dict[str, list[str]]:
        """Attribute names per sample, the format of ``Evaluator.predict``."""
        out: dict[str, list[str]] = {k: [] for k in ATTRIBUTES}
        colour_names = list(world.OBJECT_COLOURS)
        backgrounds = torch.tensor(list(world.BACKGROUNDS.values()))
        for start in range(0, latent.shape[0], self.chunk):
            fitted = fit(latent[start : start + self.chunk])
            residual = fitted["residual"]
            best = residual.flatten(1).argmin(-1)
            template, colour = best // residual.shape[-1], best % residual.shape[-1]
            for i, (t, c) in enumerate(zip(template.tolist(), colour.tolist(), strict=True)):
                pattern, shape = self.labels[t][:2]
                b = fitted["background"][i, t, c]
                out["colour"].append(colour_names[c])
                out["pattern"].append(pattern)
                out["shape"].append(shape)
                out["background"].append(ATTRIBUTES["background"][int((backgrounds - b).norm(dim=-1).argmin())])
        return out


@functools.lru_cache(maxsize=1)
def default_reader() -> Reader:
    """One reader per process (its bank is built once)."""
    return Reader()


def agreement(first: dict[str, list[str]], second: dict[str, list[str]]) -> float:
    """Share of samples two readings agree on colour, pattern and shape together."""
    keys = ("colour", "pattern", "shape")
    hits = [all(first[k][i] == second[k][i] for k in keys) for i in range(len(first["colour"]))]
    return sum(hits) / len(hits)
