"""Plot the training losses (total, L_LDM, gamma-free L_ac) over the steps, with OpenCV only.

Shares the axis helpers of :mod:`p3s_core.schedule_plot` (nice ranges, ticks, text).
"""

from __future__ import annotations

import cv2
import numpy as np

from .schedule_plot import (
    BACKGROUND,
    FRAME_COLOR,
    GRID_COLOR,
    TEXT_COLOR,
    _check_size,
    _nice_ceil,
    _put_text,
    _text_scale,
    _ticks,
)
from .training import TrainHistory

SERIES = (("total", (217, 64, 13)), ("L_LDM", (26, 89, 191)), ("L_ac", (40, 160, 60)))
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def plot_losses(history: TrainHistory, width: int = 512, height: int = 320) -> np.ndarray:
    """The three loss curves as a ``height x width x 3`` float32 RGB image in [0, 1]."""
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

    for value in _ticks(y_max):
        y = y_of(value)
        cv2.line(image, (left, y), (right, y), GRID_COLOR, 1, cv2.LINE_8)
        label = f"{value:g}"
        (tw, th), _ = cv2.getTextSize(label, _FONT, scale, 1)
        cv2.putText(image, label, (left - tw - 6, y + th // 2), _FONT, scale, TEXT_COLOR, 1, cv2.LINE_AA)
    steps = len(history.total)
    for (_name, colour), series in zip(SERIES, values, strict=True):
        if steps:
            xs = np.linspace(left, right, steps) if steps > 1 else np.array([left])
            pts = np.array([[round(x), y_of(v)] for x, v in zip(xs, series, strict=True)], np.int32)
            cv2.polylines(image, [pts], False, colour, max(1, round(1.5 * scale / 0.4)), cv2.LINE_AA)
    x = left + 4
    for name, colour in SERIES:
        cv2.line(image, (x, top - 12), (x + 14, top - 12), colour, 2)
        _put_text(image, name, x + 18, top - 8, scale)
        x += 30 + cv2.getTextSize(name, _FONT, scale, 1)[0][0]
    _put_text(image, f"training step (of {steps})", (left + right) // 2, height - 6, scale, centre=True)
    cv2.rectangle(image, (left, top), (right, bottom), FRAME_COLOR, 1, cv2.LINE_8)
    return image.astype(np.float32) / 255.0
