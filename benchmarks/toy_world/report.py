"""Writing the results: a markdown table and a PNG grid of samples (one row per run)."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageDraw

from . import world

COLUMNS = (
    "identity",
    "colour",
    "pattern",
    "shape",
    "identity_gap",
    "edit_green",
    "edit_identity",
    "distractor_seen",
    "diversity",
    "train_s",
)


def markdown_table(rows: list[dict], extra: tuple[str, ...] = ()) -> str:
    """The rows as a markdown table of :data:`COLUMNS` (``extra`` columns after identity)."""
    columns = (COLUMNS[0], *extra, *COLUMNS[1:])
    head = "| run | group | " + " | ".join(columns) + " |"
    rule = "|" + "---|" * (len(columns) + 2)
    lines = [head, rule]
    for row in rows:
        cells = [_fmt(row[c], c) for c in columns]
        lines.append(f"| {row['run']} | {row['group']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value: float, column: str) -> str:
    if column in ("train_s", "seeds"):
        return f"{value:.0f}"
    if column == "identity_gap":
        return f"{value:+.4f}"
    return f"{value:.3f}"


def sample_grid(grids: dict[str, torch.Tensor], path: Path, per_row: int = 8, cell: int = 32) -> None:
    """PNG: per run, its name and its first ``per_row`` samples of "a photo of sks" (nearest-upscaled)."""
    label = 230
    image = Image.new("RGB", (label + per_row * (cell + 2), len(grids) * (cell + 2)), "white")
    draw = ImageDraw.Draw(image)
    for r, (name, samples) in enumerate(grids.items()):
        y = r * (cell + 2)
        draw.text((4, y + cell // 2 - 6), name, fill="black")
        rgb = world.from_latent(samples[:per_row])
        for c, one in enumerate(rgb):
            pixels = (one.permute(1, 2, 0).numpy() * 255).astype("uint8")
            tile = Image.fromarray(pixels).resize((cell, cell), Image.NEAREST)
            image.paste(tile, (label + c * (cell + 2), y))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
