"""The injection weight schedule: curve values, window, custom points, validation, serialisation."""

import json
import math

import pytest

from p3s_core.errors import P3SInputError
from p3s_core.sampling.schedule import (
    CURVES,
    WeightSchedule,
    parse_control_points_json,
    progress_from_sigmas,
    step_progress,
)


@pytest.mark.parametrize(
    ("curve", "expected"),
    [
        # a = 0.2, b = 1.8 at s = 0, 0.25, 0.5, 1
        ("constant", [0.2, 0.2, 0.2, 0.2]),
        ("linear", [0.2, 0.6, 1.0, 1.8]),
        ("quadratic_up", [0.2, 0.3, 0.6, 1.8]),  # a + 1.6 s^2
        ("quadratic_down", [0.2, 0.9, 1.4, 1.8]),  # 1.8 - 1.6 (1 - s)^2
        ("cosine", [0.2, 0.2 + 1.6 * (1 - math.sqrt(0.5)) / 2, 1.0, 1.8]),
    ],
)
def test_curve_values_at_known_points(curve, expected):
    schedule = WeightSchedule(curve, start_weight=0.2, end_weight=1.8)
    got = [schedule.weight(s) for s in (0.0, 0.25, 0.5, 1.0)]
    assert got == pytest.approx(expected, abs=1e-12)


def test_paper_variants_mirror_each_other_in_time():
    up = WeightSchedule("quadratic_up", 0.0, 1.0)
    down = WeightSchedule("quadratic_down", 1.0, 0.0)
    for s in (0.0, 0.1, 0.3, 0.5, 0.77, 1.0):
        assert up.weight(s) == pytest.approx(s * s)
        assert down.weight(s) == pytest.approx((1 - s) ** 2)
        assert down.weight(s) == pytest.approx(up.weight(1 - s))


def test_quadratic_down_is_point_mirror_of_quadratic_up_for_same_endpoints():
    a, b = 0.3, 2.0
    up, down = WeightSchedule("quadratic_up", a, b), WeightSchedule("quadratic_down", a, b)
    for s in (0.0, 0.2, 0.6, 1.0):
        assert down.weight(s) == pytest.approx(a + b - up.weight(1 - s))
    # Change comes late for "up" and early for "down": at s = 0.25 up has moved 1/16, down 7/16.
    assert up.weight(0.25) - a == pytest.approx((b - a) / 16)
    assert down.weight(0.25) - a == pytest.approx((b - a) * 7 / 16)


def test_strength_scales_every_curve():
    for curve in CURVES[:-1]:
        plain = WeightSchedule(curve, 0.5, 1.5)
        strong = WeightSchedule(curve, 0.5, 1.5, strength=2.5)
        for s in (0.0, 0.4, 1.0):
            assert strong.weight(s) == pytest.approx(2.5 * plain.weight(s))


def test_window_edges_are_inclusive_and_zero_outside():
    schedule = WeightSchedule("linear", 1.0, 2.0, start_percent=0.25, end_percent=0.75)
    assert schedule.weight(0.2499) == 0.0
    assert schedule.weight(0.25) == pytest.approx(1.25)
    assert schedule.weight(0.5) == pytest.approx(1.5)
    assert schedule.weight(0.75) == pytest.approx(1.75)
    assert schedule.weight(0.7501) == 0.0
    # The curve keeps its global shape: it is not stretched to the window.
    assert schedule.curve_value(0.25) == schedule.weight(0.25)


def test_weights_per_step_use_i_over_n_minus_one():
    schedule = WeightSchedule("linear", 0.0, 1.0)
    assert schedule.weights(5) == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert schedule.weights(1) == [0.0]
    windowed = WeightSchedule("constant", 1.0, start_percent=0.5, end_percent=1.0)
    assert windowed.weights(5) == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert step_progress(3, 4) == 1.0


def test_progress_from_sigmas_finds_the_step():
    sigmas = [14.6, 6.0, 2.5, 0.9, 0.0]  # 4 steps
    assert progress_from_sigmas(14.6, sigmas) == 0.0
    assert progress_from_sigmas(2.5, sigmas) == pytest.approx(2 / 3)
    assert progress_from_sigmas(0.91, sigmas) == 1.0
    with pytest.raises(P3SInputError, match="at least two"):
        progress_from_sigmas(1.0, [1.0])


def test_custom_points_interpolate_linearly_and_hold_outside():
    schedule = WeightSchedule("custom", points=((0.2, 0.5), (0.6, 1.5), (0.8, 0.0)))
    assert schedule.weight(0.0) == 0.5  # held before the first point
    assert schedule.weight(0.2) == 0.5
    assert schedule.weight(0.4) == pytest.approx(1.0)
    assert schedule.weight(0.6) == pytest.approx(1.5)
    assert schedule.weight(0.7) == pytest.approx(0.75)
    assert schedule.weight(0.8) == 0.0
    assert schedule.weight(1.0) == 0.0  # held after the last point
    single = WeightSchedule("custom", points=[[0.5, 0.7]])
    assert single.weights(3) == [0.7, 0.7, 0.7]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"curve": "exponential"}, "Unknown schedule curve 'exponential'"),
        ({"start_weight": -0.1}, r"start_weight is -0.1; it must be a number in \[0, 10\]"),
        ({"end_weight": float("nan")}, "end_weight"),
        ({"strength": 11.0}, "strength is 11.0"),
        ({"start_percent": 1.5}, r"start_percent is 1.5; it must be a number in \[0, 1\]"),
        ({"start_percent": 0.8, "end_percent": 0.2}, "window is empty"),
        ({"curve": "custom"}, "needs control points"),
        ({"curve": "custom", "points": ((0.5, 1.0), (0.5, 0.2))}, "sorted by progress with no repeats"),
        ({"curve": "custom", "points": ((0.6, 1.0), (0.3, 0.2))}, "point 2 .* does not come after point 1"),
        ({"curve": "custom", "points": ((0.0, 1.0), (1.2, 0.2))}, r"control point 2 progress is 1.2"),
        ({"curve": "custom", "points": ((0.0, 20.0),)}, "control point 1 weight is 20.0"),
        ({"curve": "custom", "points": ((0.0, 1.0, 2.0),)}, r"not a \[progress, weight\] pair"),
        ({"curve": "custom", "points": "0,1"}, "must be a list"),
        ({"curve": "linear", "points": ((0.0, 1.0),)}, "only used by the 'custom' curve"),
    ],
)
def test_bad_parameters_raise_clear_errors(kwargs, message):
    with pytest.raises(P3SInputError, match=message):
        WeightSchedule(**kwargs)


def test_bad_progress_and_steps_raise():
    schedule = WeightSchedule()
    with pytest.raises(P3SInputError, match=r"progress is 1\.01"):
        schedule.weight(1.01)
    with pytest.raises(P3SInputError, match="num_steps is 0"):
        schedule.weights(0)
    with pytest.raises(P3SInputError, match=r"Step 4 is outside 0\.\.3"):
        step_progress(4, 4)


@pytest.mark.parametrize(
    "schedule",
    [
        WeightSchedule(),
        WeightSchedule("cosine", 0.1, 2.0, strength=0.7, start_percent=0.1, end_percent=0.9),
        WeightSchedule("custom", strength=1.5, points=((0.0, 0.0), (0.3, 1.0), (1.0, 0.25))),
    ],
)
def test_dict_round_trip_through_json(schedule):
    data = json.loads(json.dumps(schedule.to_dict()))
    again = WeightSchedule.from_dict(data)
    assert again == schedule
    assert again.weights(11) == schedule.weights(11)


def test_from_dict_rejects_unknown_fields_and_versions():
    with pytest.raises(P3SInputError, match=r"Unknown schedule field\(s\) \['gamma'\]"):
        WeightSchedule.from_dict({"curve": "linear", "gamma": 2})
    with pytest.raises(P3SInputError, match="version 2 is not supported"):
        WeightSchedule.from_dict({"version": 2})
    with pytest.raises(P3SInputError, match="must be a dict"):
        WeightSchedule.from_dict([1, 2])
    assert WeightSchedule.from_dict({"curve": "linear", "end_weight": 0}).weight(1.0) == 0.0


def test_control_points_json():
    assert parse_control_points_json("[[0, 0.2], [0.5, 1], [1.0, 0.5]]") == (
        (0.0, 0.2),
        (0.5, 1.0),
        (1.0, 0.5),
    )
    assert parse_control_points_json("  ") == ()
    with pytest.raises(P3SInputError, match="not valid JSON"):
        parse_control_points_json("[[0, 1],")
    with pytest.raises(P3SInputError, match="JSON list"):
        parse_control_points_json('{"points": []}')
    with pytest.raises(P3SInputError, match="not a"):
        parse_control_points_json("[[0, 1, 2]]")
