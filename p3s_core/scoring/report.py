"""The scores for people: a markdown table (per image, mean, variance) and a chart image (OpenCV only)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from .protocol import CLIP_T_SCALE, DINO_PREPROCESS
from .subject_score import SubjectScores

METRICS = (("clip_i", "CLIP-I"), ("clip_t", "CLIP-T"), ("dino", "DINO"))
COLORS = {"clip_i": (26, 89, 191), "clip_t": (217, 64, 13), "dino": (40, 160, 60), "extra_clip_i": (120, 120, 120)}
BACKGROUND, TEXT, GRID = (255, 255, 255), (40, 40, 40), (215, 215, 215)
WARN = (200, 30, 30)
MAX_THUMBNAILS = 64
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _metrics(scores: SubjectScores) -> list[tuple[str, str]]:
    extra = [("extra_clip_i", "CLIP-I*")] if scores.extra_clip_i is not None else []
    return [*METRICS, *extra]


def protocol_note(scores: SubjectScores) -> str:
    """One line saying what the numbers are comparable with."""
    parts = [
        f"CLIP-I/CLIP-T: {scores.clip_label}; DINO: {scores.dino_label} (CLS, {DINO_PREPROCESS.resize}/"
        f"{DINO_PREPROCESS.crop} px)",
        f"plain cosine (x{CLIP_T_SCALE:g})",
        f"{scores.references} reference(s), {'masked (our addition)' if scores.masked else 'whole'}",
    ]
    if scores.extra_clip_i is not None:
        parts.append(f"CLIP-I* = {scores.extra_label}, not the protocol's backbone")
    verdict = "DreamBench protocol" if scores.protocol else "NOT the DreamBench protocol (see backbones/masks)"
    return f"{verdict}: " + "; ".join(parts) + "."


def score_table(scores: SubjectScores) -> str:
    """Markdown: one row per image, then the mean and the variance over images."""
    metrics = _metrics(scores)
    header = "| image | prompt (CLIP-T) | " + " | ".join(label for _, label in metrics) + " |"
    lines = [protocol_note(scores), "", header, "|" + "---|" * (2 + len(metrics))]
    for row in scores.rows():
        prompt = str(row["prompt"]).replace("|", "/")
        values = " | ".join(f"{row[key]:.4f}" for key, _ in metrics)
        lines.append(f"| {row['image']} | {prompt} | {values} |")
    for what, digits in (("mean", 4), ("variance", 6)):
        values = " | ".join(f"{getattr(scores.summaries[key], what):.{digits}f}" for key, _ in metrics)
        lines.append(f"| **{what}** | | {values} |")
    return "\n".join(lines) + "\n"


def _text(image: np.ndarray, text: str, x: int, y: int, scale: float, color=TEXT) -> None:
    cv2.putText(image, text, (x, y), _FONT, scale, color, 1, cv2.LINE_AA)


def _thumbnail(image: torch.Tensor, size: int) -> np.ndarray:
    rgb = np.clip(np.rint(image[..., :3].float().cpu().numpy() * 255), 0, 255).astype(np.uint8)
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    height, width = rgb.shape[:2]
    scale = size / max(height, width)
    new = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(rgb, new, interpolation=cv2.INTER_AREA)
    tile = np.full((size, size, 3), 255, np.uint8)
    y, x = (size - new[1]) // 2, (size - new[0]) // 2
    tile[y : y + new[1], x : x + new[0]] = small
    return tile


def render_score_chart(images: torch.Tensor, scores: SubjectScores, thumbnail: int = 112) -> np.ndarray:
    """``[H, W, 3]`` float32 RGB in [0, 1]: the means on top, then each image with a bar per metric.

    Bars run from 0 to 1 (cosines below 0 show as empty bars); a thin line marks each metric's mean.
    At most :data:`MAX_THUMBNAILS` images are drawn (the table has them all).
    """
    metrics = _metrics(scores)
    count = min(len(scores.prompts), MAX_THUMBNAILS)
    columns = min(count, 8)
    rows = math.ceil(count / columns)
    bar_h, gap = 12, 8
    cell_w, cell_h = thumbnail + gap, thumbnail + len(metrics) * (bar_h + 3) + gap
    header_h = 34 + 18 * len(metrics)
    width = max(columns * cell_w + gap, 420)
    canvas = np.full((header_h + rows * cell_h + gap, width, 3), BACKGROUND, np.uint8)
    _text(canvas, "P3S Subject Score", gap, 20, 0.55)
    for line, (key, label) in enumerate(metrics):
        summary = scores.summaries[key]
        y = 40 + 18 * line
        cv2.rectangle(canvas, (gap, y - 10), (gap + 10, y), COLORS[key], -1)
        name = f"{label} ({scores.extra_label}, not the protocol's)" if key == "extra_clip_i" else label
        _text(canvas, f"{name}  mean {summary.mean:.4f}  var {summary.variance:.6f}", gap + 16, y, 0.42)
    if not scores.protocol or scores.extra_clip_i is not None:
        note = "not the DreamBench protocol" if not scores.protocol else "CLIP-I*: ComfyUI's CLIP, not the protocol's"
        _text(canvas, note, max(gap, width - 8 * len(note) - gap), 20, 0.4, WARN)
    for index in range(count):
        row, column = divmod(index, columns)
        x, y = gap + column * cell_w, header_h + row * cell_h
        canvas[y : y + thumbnail, x : x + thumbnail] = _thumbnail(images[index], thumbnail)
        for line, (key, _) in enumerate(metrics):
            value = float(getattr(scores, key)[index])
            top = y + thumbnail + 3 + line * (bar_h + 3)
            cv2.rectangle(canvas, (x, top), (x + thumbnail - 1, top + bar_h), GRID, -1)
            filled = round(max(0.0, min(1.0, value)) * (thumbnail - 1))
            if filled > 0:
                cv2.rectangle(canvas, (x, top), (x + filled, top + bar_h), COLORS[key], -1)
            mean_x = x + round(max(0.0, min(1.0, scores.summaries[key].mean)) * (thumbnail - 1))
            cv2.line(canvas, (mean_x, top - 1), (mean_x, top + bar_h + 1), TEXT, 1)
            _text(canvas, f"{value:.3f}", x + 3, top + bar_h - 2, 0.33, (255, 255, 255) if filled > 40 else TEXT)
    return canvas.astype(np.float32) / 255.0
