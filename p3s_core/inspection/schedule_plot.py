"""Render a :class:`~p3s_core.sampling.schedule.WeightSchedule` as an RGB plot with OpenCV only.

The plot shows the weight over the sampling steps: a frame with grid lines, weight ticks on
the left, step ticks (1-based, as users count steps) below, the active window shaded, the
continuous curve (one sample per pixel column), a dot at each sampling step, and the frame on top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import P3SInputError
from ..sampling.schedule import WeightSchedule, step_progress

# RGB colours in 0..255 (drawn on uint8: OpenCV's text needs 8-bit images); the result is / 255.
BACKGROUND = (255, 255, 255)
FRAME_COLOR = (50, 50, 50)
GRID_COLOR = (200, 200, 200)
WINDOW_COLOR = (216, 234, 255)
CURVE_COLOR = (217, 64, 13)
STEP_COLOR = (26, 89, 191)
TEXT_COLOR = (40, 40, 40)

MIN_WIDTH, MIN_HEIGHT = 160, 120
_FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class PlotArea:
    """Pixel box of the plot's frame and its value ranges: x 0..1 progress, y 0..``y_max`` weight."""

    left: int
    top: int
    right: int
    bottom: int
    y_max: float

    def x_of(self, progress: float) -> float:
        """Column of ``progress`` (0 at ``left``, 1 at ``right``)."""
        return self.left + progress * (self.right - self.left)

    def y_of(self, weight: float) -> float:
        """Row of ``weight`` (0 at ``bottom``, ``y_max`` at ``top``)."""
        return self.bottom - weight / self.y_max * (self.bottom - self.top)


def plot_area(schedule: WeightSchedule, num_steps: int, width: int, height: int) -> PlotArea:
    """Where :func:`plot_schedule` puts the frame for these arguments."""
    _check_size(width, height)
    scale = _text_scale(width, height)
    left = round(48 * scale / 0.4) + 6
    top = round(26 * scale / 0.4)
    right = width - round(14 * scale / 0.4)
    bottom = height - round(40 * scale / 0.4)
    peak = max(_dense_weights(schedule, max(right - left, 2)) + schedule.weights(num_steps))
    return PlotArea(left, top, right, bottom, _nice_ceil(max(peak, 1.0)))


def plot_schedule(schedule: WeightSchedule, num_steps: int = 20, width: int = 512, height: int = 320) -> np.ndarray:
    """The schedule over ``num_steps`` steps as a ``height x width x 3`` float32 RGB image in [0, 1]."""
    weights = schedule.weights(num_steps)
    area = plot_area(schedule, num_steps, width, height)
    scale = _text_scale(width, height)
    image = np.empty((height, width, 3), np.uint8)
    image[:] = BACKGROUND

    x0 = round(area.x_of(schedule.start_percent))
    x1 = round(area.x_of(schedule.end_percent))
    cv2.rectangle(image, (x0, area.top), (x1, area.bottom), WINDOW_COLOR, thickness=-1)

    for value in _ticks(area.y_max):
        y = round(area.y_of(value))
        cv2.line(image, (area.left, y), (area.right, y), GRID_COLOR, 1, cv2.LINE_8)
        label = f"{value:g}"
        (tw, th), _ = cv2.getTextSize(label, _FONT, scale, 1)
        cv2.putText(image, label, (area.left - tw - 6, y + th // 2), _FONT, scale, TEXT_COLOR, 1, cv2.LINE_AA)
    for step in _step_ticks(num_steps):
        x = round(area.x_of(step_progress(step - 1, num_steps))) if num_steps > 1 else area.left
        cv2.line(image, (x, area.bottom), (x, area.bottom + 4), FRAME_COLOR, 1, cv2.LINE_8)
        label = str(step)
        (tw, th), _ = cv2.getTextSize(label, _FONT, scale, 1)
        cv2.putText(image, label, (x - tw // 2, area.bottom + 8 + th), _FONT, scale, TEXT_COLOR, 1, cv2.LINE_AA)

    _put_text(
        image,
        f"sampling step (of {num_steps})   noise -> clean",
        (area.left + area.right) // 2,
        height - 6,
        scale,
        centre=True,
    )
    _put_text(image, "weight", 4, area.top - 8, scale)
    title = _title(schedule)
    (title_width, _), _ = cv2.getTextSize(title, _FONT, scale, 1)
    _put_text(image, title, area.right - title_width, area.top - 8, scale)

    for i, w in enumerate(weights):
        centre = (round(area.x_of(step_progress(i, num_steps))), round(area.y_of(w)))
        cv2.circle(image, centre, max(3, round(4 * scale / 0.4)), STEP_COLOR, -1, cv2.LINE_8)

    columns = np.arange(area.left, area.right + 1)
    dense = _dense_weights(schedule, len(columns) - 1)
    curve = np.array([[x, round(area.y_of(w))] for x, w in zip(columns, dense, strict=False)], np.int32)
    cv2.polylines(image, [curve], False, CURVE_COLOR, max(1, round(2 * scale / 0.4)), cv2.LINE_8)
    # The frame goes on top, as plot axes do, so it stays whole where the curve runs along it.
    cv2.rectangle(image, (area.left, area.top), (area.right, area.bottom), FRAME_COLOR, 1, cv2.LINE_8)
    return image.astype(np.float32) / 255.0


def _title(schedule: WeightSchedule) -> str:
    if schedule.curve == "custom":
        shape = f"custom ({len(schedule.points)} points)"
    elif schedule.curve == "constant":
        shape = f"constant {schedule.start_weight:g}"
    else:
        shape = f"{schedule.curve} {schedule.start_weight:g}->{schedule.end_weight:g}"
    window = ""
    if (schedule.start_percent, schedule.end_percent) != (0.0, 1.0):
        window = f"  window {schedule.start_percent:g}-{schedule.end_percent:g}"
    return f"{shape}  x{schedule.strength:g}{window}"


def _dense_weights(schedule: WeightSchedule, segments: int) -> list[float]:
    return [schedule.weight(i / segments) for i in range(segments + 1)]


def _nice_ceil(value: float) -> float:
    """Smallest of 1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 6, 8 times a power of ten that is >= ``value``."""
    exponent = math.floor(math.log10(value))
    for mantissa in (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0):
        candidate = mantissa * 10.0**exponent
        if candidate >= value - 1e-12:
            return candidate
    return 10.0 ** (exponent + 1)


def _ticks(y_max: float) -> list[float]:
    """Ticks from 0 to ``y_max``, spaced 1, 2, 2.5 or 5 times a power of ten, at most 6 gaps."""
    exponent = math.floor(math.log10(y_max)) - 1
    for e in range(exponent, exponent + 3):
        for mantissa in (1.0, 2.0, 2.5, 5.0):
            spacing = mantissa * 10.0**e
            gaps = y_max / spacing
            if gaps <= 6 + 1e-9 and abs(gaps - round(gaps)) < 1e-6:
                return [round(i * spacing, 6) for i in range(round(gaps) + 1)]
    return [0.0, y_max]


def _step_ticks(num_steps: int) -> list[int]:
    """1-based step numbers to label: 1, the last step, and round numbers between (at most ~10)."""
    spacing = 1
    for candidate in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000):
        spacing = candidate
        if num_steps / candidate <= 10:
            break
    ticks = sorted({1, num_steps, *range(spacing, num_steps + 1, spacing)})
    # Drop a round tick crowding the last one.
    if len(ticks) > 2 and num_steps - ticks[-2] < spacing / 2:
        ticks.pop(-2)
    return ticks


def _text_scale(width: int, height: int) -> float:
    return max(0.3, min(0.4 * min(width / 512, height / 320), 1.2))


def _put_text(image: np.ndarray, text: str, x: int, y: int, scale: float, centre: bool = False) -> None:
    if centre:
        (tw, _), _ = cv2.getTextSize(text, _FONT, scale, 1)
        x -= tw // 2
    cv2.putText(image, text, (x, y), _FONT, scale, TEXT_COLOR, 1, cv2.LINE_AA)


def _check_size(width: int, height: int) -> None:
    if not (isinstance(width, int) and isinstance(height, int)) or width < MIN_WIDTH or height < MIN_HEIGHT:
        raise P3SInputError(
            f"Plot size {width!r}x{height!r} is too small: use at least {MIN_WIDTH}x{MIN_HEIGHT} pixels."
        )
