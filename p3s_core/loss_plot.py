"""A per-step curve (``L_ac`` while sampling) as an RGB plot, in the style of the schedule plot.

Steps without a value (the copy did not run) leave a gap and are marked with a cross on the axis.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .schedule_plot import (
    BACKGROUND,
    CURVE_COLOR,
    FRAME_COLOR,
    GRID_COLOR,
    STEP_COLOR,
    _check_size,
    _nice_ceil,
    _put_text,
    _step_ticks,
    _text_scale,
    _ticks,
)

_FONT = cv2.FONT_HERSHEY_SIMPLEX


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
    exponent = math.floor(math.log10(y_max))  # _ticks rounds to 6 decimals: work in units of 10^exponent
    for value in (t * 10.0**exponent for t in _ticks(y_max / 10.0**exponent)):
        y = y_of(value)
        cv2.line(image, (left, y), (right, y), GRID_COLOR, 1, cv2.LINE_8)
        label = f"{value:.3g}"
        (tw, th), _ = cv2.getTextSize(label, _FONT, scale, 1)
        _put_text(image, label, left - tw - 6, y + th // 2, scale)
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
