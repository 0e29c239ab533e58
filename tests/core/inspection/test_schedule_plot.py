"""The schedule plot: the drawn curve lies where the formula puts it, inside a detected frame."""

import numpy as np
import pytest

from p3s_core.errors import P3SInputError
from p3s_core.inspection.schedule_plot import CURVE_COLOR, FRAME_COLOR, WINDOW_COLOR, plot_schedule
from p3s_core.sampling.schedule import WeightSchedule


def _mask(image: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(np.abs(image * 255.0 - np.array(colour)) < 0.5, axis=-1)


def _frame(image: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the frame, found from the long lines in the frame colour."""
    frame = _mask(image, FRAME_COLOR)
    rows = np.flatnonzero(frame.sum(axis=1) > 0.5 * image.shape[1])
    cols = np.flatnonzero(frame.sum(axis=0) > 0.5 * image.shape[0])
    assert len(rows) >= 2 and len(cols) >= 2, "no frame drawn"
    return int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())


def _curve_rows(image: np.ndarray, column: int) -> np.ndarray:
    return np.flatnonzero(_mask(image, CURVE_COLOR)[:, column])


@pytest.mark.parametrize(
    "schedule",
    [
        WeightSchedule("linear", 0.0, 1.0),
        WeightSchedule("quadratic_up", 0.2, 0.9),
        WeightSchedule("cosine", 1.0, 0.0),
        WeightSchedule("custom", points=((0.0, 0.1), (0.3, 1.0), (1.0, 0.4))),
    ],
)
def test_curve_pixels_follow_the_formula(schedule):
    image = plot_schedule(schedule, num_steps=20, width=512, height=320)
    assert image.shape == (320, 512, 3) and image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    left, top, right, bottom = _frame(image)
    assert 20 < left < 100 and 10 < top < 60 and right > 450 and bottom > 240
    curve = _mask(image, CURVE_COLOR)
    checked = 0
    for column in range(left + 5, right - 5, 7):
        progress = (column - left) / (right - left)
        expected = bottom - schedule.weight(progress) * (bottom - top)  # weights <= 1: top = 1.0
        rows = np.flatnonzero(curve[:, column])
        assert len(rows) > 0, f"no curve pixel in column {column}"
        assert abs(rows.mean() - expected) <= 2.0, (column, rows, expected)
        checked += 1
    assert checked > 50


def test_axis_grows_with_strength_so_the_curve_stays_inside():
    schedule = WeightSchedule("constant", 1.0, strength=2.0)
    image = plot_schedule(schedule, num_steps=10)
    left, top, right, _bottom = _frame(image)
    column = (left + right) // 2
    # y axis runs to 2.0 exactly (a round value), so weight 2 sits on the top edge.
    assert abs(_curve_rows(image, column).mean() - top) <= 2.0


def test_window_is_shaded_and_curve_drops_to_zero_outside():
    schedule = WeightSchedule("constant", 0.5, start_percent=0.25, end_percent=0.75)
    image = plot_schedule(schedule, num_steps=20)
    left, top, right, bottom = _frame(image)
    shaded = _mask(image, WINDOW_COLOR)
    row = top + (bottom - top) // 4  # above the curve, below the top edge
    inside = [left + int(f * (right - left)) for f in (0.3, 0.5, 0.7)]
    outside = [left + int(f * (right - left)) for f in (0.1, 0.2, 0.8, 0.9)]
    assert all(shaded[row, x] for x in inside)
    assert not any(shaded[row, x] for x in outside)
    for x in outside:
        assert abs(_curve_rows(image, x).mean() - bottom) <= 2.0
    for x in inside:
        assert abs(_curve_rows(image, x).mean() - (bottom + top) / 2) <= 2.0


def test_other_sizes_and_step_counts_render():
    for steps, width, height in ((1, 160, 120), (7, 200, 140), (150, 1024, 640)):
        image = plot_schedule(WeightSchedule("linear", 0.0, 1.0), steps, width, height)
        assert image.shape == (height, width, 3)
        assert _mask(image, CURVE_COLOR).any()


def test_too_small_plot_is_refused():
    with pytest.raises(P3SInputError, match="too small"):
        plot_schedule(WeightSchedule(), 20, 100, 50)
