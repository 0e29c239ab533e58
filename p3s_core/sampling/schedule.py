"""Timestep-based weight schedule of the injection (DESIGN 1.6).

[stated] The paper weights the injected hidden states by the denoising time: "lower weights in
the early denoising stage and higher weights in the middle and later stages", and compares a
fixed weight with quadratically increasing and decreasing weights.

[reconstructed] Curves are defined on denoising *progress* ``s`` in [0, 1] (0 = pure noise,
1 = clean), not on raw timesteps, because the paper's text and its Table III disagree on the
direction when read in ``t``. Every curve except ``constant`` and ``custom`` runs from
``start_weight`` (a, at s = 0) to ``end_weight`` (b, at s = 1):

* ``constant``: ``w = a`` (b is ignored);
* ``linear``: ``w = a + (b - a) s``;
* ``quadratic_up``: ``w = a + (b - a) s^2``, change concentrated late (ease-in);
* ``quadratic_down``: ``w = b + (a - b) (1 - s)^2``, the point mirror of ``quadratic_up``
  (``w_down(s) = a + b - w_up(1 - s)``), change concentrated early (ease-out);
* ``cosine``: ``w = a + (b - a) (1 - cos(pi s)) / 2``, smooth at both ends;
* ``custom``: piecewise linear through user control points ``(s, w)``, held constant before
  the first and after the last point (a and b are ignored).

The paper's three variants are: fixed = ``constant``; quadratically increasing =
``quadratic_up`` with a = 0, b = 1 (``s^2``); quadratically decreasing = ``quadratic_down`` with
a = 1, b = 0 (``(1 - s)^2``, the time mirror of ``s^2``).

A ControlNet-style window multiplies the curve: the weight is the curve (evaluated at the
global ``s``, not stretched to the window) for ``start_percent <= s <= end_percent`` and 0
outside. ``strength`` scales everything. Where the weight is 0 the trainable copy need not run.

Sampling step ``i`` of ``n`` has progress ``s = i / (n - 1)`` (the first step at 0, the last at
1; a single step has s = 0): see :func:`step_progress`.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import P3SInputError
from ..validation import excerpt, parse_json

SCHEDULE_VERSION = 1
CURVES = ("constant", "linear", "quadratic_up", "quadratic_down", "cosine", "custom")
MAX_WEIGHT = 10.0
"""Largest start/end/custom weight and strength accepted (weights and strength are >= 0)."""

ControlPoint = tuple[float, float]


@dataclass(frozen=True)
class WeightSchedule:
    """Injection weight as a function of denoising progress (the ``P3S_SCHEDULE`` type)."""

    curve: str = "constant"
    start_weight: float = 1.0
    end_weight: float = 1.0
    strength: float = 1.0
    start_percent: float = 0.0
    end_percent: float = 1.0
    points: tuple[ControlPoint, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.curve not in CURVES:
            raise P3SInputError(f"Unknown schedule curve {self.curve!r}: choose one of {', '.join(CURVES)}.")
        for name in ("start_weight", "end_weight", "strength"):
            object.__setattr__(self, name, _check_weight(getattr(self, name), name))
        for name in ("start_percent", "end_percent"):
            object.__setattr__(self, name, _check_progress(getattr(self, name), name))
        if self.start_percent > self.end_percent:
            raise P3SInputError(
                f"start_percent ({self.start_percent:g}) is after end_percent ({self.end_percent:g}): the "
                "window is empty. Set start_percent <= end_percent (0 = first step, 1 = last step)."
            )
        object.__setattr__(self, "points", validate_control_points(self.points, self.curve))

    def curve_value(self, progress: float) -> float:
        """The curve alone at ``progress`` (no window, no strength)."""
        s = _check_progress(progress, "progress")
        a, b = self.start_weight, self.end_weight
        if self.curve == "constant":
            return a
        if self.curve == "linear":
            return a + (b - a) * s
        if self.curve == "quadratic_up":
            return a + (b - a) * s * s
        if self.curve == "quadratic_down":
            return b + (a - b) * (1.0 - s) ** 2
        if self.curve == "cosine":
            return a + (b - a) * (1.0 - math.cos(math.pi * s)) / 2.0
        return _interpolate(self.points, s)

    def in_window(self, progress: float) -> bool:
        """Whether ``progress`` lies inside ``[start_percent, end_percent]`` (edges included)."""
        return self.start_percent <= progress <= self.end_percent

    def weight(self, progress: float) -> float:
        """Injection weight at denoising progress ``progress`` in [0, 1] (0 = pure noise)."""
        s = _check_progress(progress, "progress")
        if not self.in_window(s):
            return 0.0
        return self.strength * self.curve_value(s)

    def weights(self, num_steps: int) -> list[float]:
        """Weight at each of ``num_steps`` sampling steps, step ``i`` at ``step_progress(i, num_steps)``."""
        return [self.weight(step_progress(i, num_steps)) for i in range(_check_steps(num_steps))]

    def to_dict(self) -> dict:
        """A JSON-ready dict (for safetensors metadata and node outputs); see :meth:`from_dict`."""
        return {
            "version": SCHEDULE_VERSION,
            "curve": self.curve,
            "start_weight": self.start_weight,
            "end_weight": self.end_weight,
            "strength": self.strength,
            "start_percent": self.start_percent,
            "end_percent": self.end_percent,
            "points": [[s, w] for s, w in self.points],
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> WeightSchedule:
        """Rebuild and validate a schedule written by :meth:`to_dict`; missing fields take defaults."""
        if not isinstance(data, Mapping):
            raise P3SInputError(f"A schedule must be a dict as written by WeightSchedule.to_dict, not {excerpt(data)}.")
        fields = dict(data)
        version = fields.pop("version", SCHEDULE_VERSION)
        if version != SCHEDULE_VERSION:
            raise P3SInputError(
                f"Schedule format version {version!r} is not supported (this pack reads version "
                f"{SCHEDULE_VERSION}); update the pack."
            )
        allowed = {
            "curve",
            "start_weight",
            "end_weight",
            "strength",
            "start_percent",
            "end_percent",
            "points",
        }
        unknown = sorted(set(fields) - allowed)
        if unknown:
            raise P3SInputError(f"Unknown schedule field(s) {unknown}: expected only {sorted(allowed)}.")
        if "points" in fields:
            fields["points"] = _points_from_raw(fields["points"])
        return cls(**fields)


def step_progress(step: int, num_steps: int) -> float:
    """Denoising progress of sampling step ``step`` (0-based) of ``num_steps``: ``step / (num_steps - 1)``."""
    n = _check_steps(num_steps)
    if not 0 <= step < n:
        raise P3SInputError(f"Step {step} is outside 0..{n - 1} for {n} sampling steps.")
    return 0.0 if n == 1 else step / (n - 1)


def progress_from_sigmas(sigma: float, sample_sigmas: Sequence[float]) -> float:
    """Progress of the step whose sigma is ``sigma`` in a sampler's ``sample_sigmas``.

    ``sample_sigmas`` holds ``n + 1`` values for ``n`` steps (ComfyUI's ``transformer_options``
    entry); the step is the one with the nearest sigma among the first ``n``.
    """
    sigmas = [float(v) for v in sample_sigmas]
    if len(sigmas) < 2:
        raise P3SInputError("sample_sigmas needs at least two values (n steps have n + 1 sigmas).")
    steps = len(sigmas) - 1
    index = min(range(steps), key=lambda i: abs(sigmas[i] - float(sigma)))
    return step_progress(index, steps)


def validate_control_points(points: Iterable, curve: str = "custom") -> tuple[ControlPoint, ...]:
    """Check custom control points: needed (only) for ``custom``, ``s`` strictly increasing in [0, 1]."""
    parsed = _points_from_raw(points)
    if curve != "custom":
        if parsed:
            raise P3SInputError(
                f"Control points are only used by the 'custom' curve, not {curve!r}: "
                "choose the 'custom' curve or leave the points empty."
            )
        return ()
    if not parsed:
        raise P3SInputError(
            "The 'custom' curve needs control points, e.g. [[0, 0.2], [0.5, 1], [1, 1]] as [progress, weight] pairs."
        )
    for i, (s, w) in enumerate(parsed):
        _check_progress(s, f"control point {i + 1} progress")
        _check_weight(w, f"control point {i + 1} weight")
    for i in range(1, len(parsed)):
        if parsed[i][0] <= parsed[i - 1][0]:
            raise P3SInputError(
                f"Control points must be sorted by progress with no repeats: point {i + 1} (s = "
                f"{parsed[i][0]:g}) does not come after point {i} (s = {parsed[i - 1][0]:g})."
            )
    return parsed


def parse_control_points_json(text: str) -> tuple[ControlPoint, ...]:
    """Parse ``[[s, w], ...]`` (JSON) into control points; empty text gives no points."""
    if not text or not text.strip():
        return ()
    data = parse_json(text, "custom_points", "[[progress, weight], ...], e.g. [[0, 0.2], [0.5, 1], [1, 1]]")
    if not isinstance(data, list):
        raise P3SInputError("Custom points must be a JSON list of [progress, weight] pairs, e.g. [[0, 0], [1, 1]].")
    return _points_from_raw(data)


def _points_from_raw(points: Iterable) -> tuple[ControlPoint, ...]:
    if points is None:
        return ()
    if isinstance(points, (str, bytes)) or not isinstance(points, Iterable):
        raise P3SInputError(f"Control points must be a list of [progress, weight] pairs, not {excerpt(points)}.")
    out = []
    for item in points:
        if (
            not isinstance(item, (list, tuple))
            or len(item) != 2
            or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in item)
        ):
            raise P3SInputError(f"Control point {excerpt(item)} is not a [progress, weight] pair of numbers.")
        out.append((float(item[0]), float(item[1])))
    return tuple(out)


def _interpolate(points: Sequence[ControlPoint], s: float) -> float:
    if s <= points[0][0]:
        return points[0][1]
    for (s0, w0), (s1, w1) in itertools.pairwise(points):
        if s <= s1:
            return w0 + (w1 - w0) * (s - s0) / (s1 - s0)
    return points[-1][1]


def _check_progress(value: float, name: str) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not (0.0 <= value <= 1.0):
        raise P3SInputError(f"{name} is {excerpt(value)}; it must be a number in [0, 1] (0 = pure noise, 1 = clean).")
    return float(value)


def _check_weight(value: float, name: str) -> float:
    if (
        not isinstance(value, numbers.Real)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or not 0.0 <= value <= MAX_WEIGHT
    ):
        raise P3SInputError(f"{name} is {excerpt(value)}; it must be a number in [0, {MAX_WEIGHT:g}].")
    return float(value)


def _check_steps(num_steps: int) -> int:
    if not isinstance(num_steps, numbers.Integral) or isinstance(num_steps, bool) or num_steps < 1:
        raise P3SInputError(f"num_steps is {num_steps!r}; it must be a whole number >= 1.")
    return int(num_steps)
