"""Loss curves as RGB plots, in the style of the schedule plot (OpenCV only).

``plot_losses``: the training losses (total, L_LDM, L_ac) over training steps.
``plot_step_values``: a per-sampling-step curve (``L_ac`` while sampling); steps without a value
(the copy did not run) leave a gap and are marked with a cross on the axis.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .schedule_plot import (
    BACKGROUND,
    CURVE_COLOR,
    FRAME_COLOR,
    GRID_COLOR,
    STEP_COLOR,
    TEXT_COLOR,
    _check_size,
    _nice_ceil,
    _put_text,
    _step_ticks,
    _text_scale,
    _ticks,
)

if TYPE_CHECKING:
    from ..training.settings import TrainHistory

SERIES = (("total", (217, 64, 13)), ("L_LDM", (26, 89, 191)), ("L_ac", (40, 160, 60)))
_FONT = cv2.FONT_HERSHEY_SIMPLEX
WARN_COLOR = (200, 30, 30)


def _draw_value_axis(image: np.ndarray, left: int, right: int, y_max: float, y_of, scale: float) -> None:
    """Horizontal grid lines with labels for 0..``y_max``; works for tiny ranges too."""
    exponent = math.floor(math.log10(y_max))  # _ticks rounds to 6 decimals: work in units of 10^exponent
    for value in (t * 10.0**exponent for t in _ticks(y_max / 10.0**exponent)):
        y = y_of(value)
        cv2.line(image, (left, y), (right, y), GRID_COLOR, 1, cv2.LINE_8)
        label = f"{value:.3g}"
        (tw, th), _ = cv2.getTextSize(label, _FONT, scale, 1)
        _put_text(image, label, left - tw - 6, y + th // 2, scale)


def plot_losses(
    history: TrainHistory, width: int = 512, height: int = 320, caption: str = "", warn: bool = False
) -> np.ndarray:
    """The three loss curves as a ``height x width x 3`` float32 RGB image in [0, 1].

    ``caption``: a line under the legend (P3S Fine-tune's learning check), in red with ``warn``.
    """
    _check_size(width, height)
    scale = _text_scale(width, height)
    left, top = round(48 * scale / 0.4) + 6, round(26 * scale / 0.4)
    right, bottom = width - round(14 * scale / 0.4), height - round(40 * scale / 0.4)
    values = [history.total, history.ldm, history.ac]
    finite = [v for series in values for v in series if np.isfinite(v)]
    y_max = _nice_ceil(max([*finite, 1e-6]))
    image = np.empty((height, width, 3), np.uint8)
    image[:] = BACKGROUND

    def y_of(v: float) -> int:
        return round(bottom - min(max(v, 0.0), y_max) / y_max * (bottom - top))

    _draw_value_axis(image, left, right, y_max, y_of, scale)
    steps = len(history.total)
    for (_name, colour), series in zip(SERIES, values, strict=True):
        if steps:
            xs = np.linspace(left, right, steps) if steps > 1 else np.array([left])
            pts = np.array([[round(x), y_of(v)] for x, v in zip(xs, series, strict=True)], np.int32)
            thickness = max(1, round(1.5 * scale / 0.4))
            if steps == 1:  # a line through one point draws nothing: a dot, in the middle
                centre = ((left + right) // 2, int(pts[0][1]))
                cv2.circle(image, centre, 2 * thickness + 1, colour, -1, cv2.LINE_AA)
            else:
                cv2.polylines(image, [pts], False, colour, thickness, cv2.LINE_AA)
    x = left + 4
    for name, colour in SERIES:
        cv2.line(image, (x, top - 12), (x + 14, top - 12), colour, 2)
        _put_text(image, name, x + 18, top - 8, scale)
        x += 30 + cv2.getTextSize(name, _FONT, scale, 1)[0][0]
    if caption:
        fit = min(scale, scale * (right - left - 8) / max(cv2.getTextSize(caption, _FONT, scale, 1)[0][0], 1))
        (_, th), _ = cv2.getTextSize(caption, _FONT, fit, 1)
        colour = WARN_COLOR if warn else TEXT_COLOR
        cv2.putText(image, caption, (left + 4, top + th + 6), _FONT, fit, colour, 1, cv2.LINE_AA)
    _put_text(image, f"training step (of {steps})", (left + right) // 2, height - 6, scale, centre=True)
    cv2.rectangle(image, (left, top), (right, bottom), FRAME_COLOR, 1, cv2.LINE_8)
    return image.astype(np.float32) / 255.0


def plot_step_values(
    values: list[float | None], title: str = "L_ac", width: int = 512, height: int = 320
) -> np.ndarray:
    """``values`` per sampling step (None = no value) as a ``height x width x 3`` float32 RGB image in [0, 1]."""
    _check_size(width, height)
    scale = _text_scale(width, height)
    left, top = round(56 * scale / 0.4) + 6, round(26 * scale / 0.4)
    right, bottom = width - round(14 * scale / 0.4), height - round(40 * scale / 0.4)
    present = [v for v in values if v is not None]
    peak = max(present, default=0.0)
    y_max = _nice_ceil(peak * 1.05) if peak > 0 else 1.0
    steps = max(len(values), 1)

    def x_of(i: int) -> int:
        return round(left + (i / (steps - 1) if steps > 1 else 0.0) * (right - left))

    def y_of(v: float) -> int:
        return round(bottom - v / y_max * (bottom - top))

    image = np.empty((height, width, 3), np.uint8)
    image[:] = BACKGROUND
    _draw_value_axis(image, left, right, y_max, y_of, scale)
    for step in _step_ticks(steps):
        x = x_of(step - 1)
        cv2.line(image, (x, bottom), (x, bottom + 4), FRAME_COLOR, 1, cv2.LINE_8)
        label = str(step)
        (tw, th), _ = cv2.getTextSize(label, _FONT, scale, 1)
        _put_text(image, label, x - tw // 2, bottom + 8 + th, scale)
    _put_text(image, f"sampling step (of {len(values)})   noise -> clean", (left + right) // 2, height - 6, scale, True)
    (tw, _), _ = cv2.getTextSize(title, _FONT, scale, 1)
    _put_text(image, title, right - tw, top - 8, scale)

    radius = max(3, round(4 * scale / 0.4))
    run: list[tuple[int, int]] = []
    for i, v in enumerate([*values, None]):
        if v is None:
            if len(run) > 1:
                cv2.polylines(image, [np.array(run, np.int32)], False, CURVE_COLOR, max(1, round(2 * scale / 0.4)))
            run = []
            if i < len(values):
                x = x_of(i)
                cv2.drawMarker(image, (x, bottom), FRAME_COLOR, cv2.MARKER_TILTED_CROSS, radius * 2, 1)
            continue
        run.append((x_of(i), y_of(v)))
    for i, v in enumerate(values):
        if v is not None:
            cv2.circle(image, (x_of(i), y_of(v)), radius, STEP_COLOR, -1, cv2.LINE_8)
    cv2.rectangle(image, (left, top), (right, bottom), FRAME_COLOR, 1, cv2.LINE_8)
    return image.astype(np.float32) / 255.0
