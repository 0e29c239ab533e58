"""Point supervision [stated]: the user marks the subject with points, one set per image.

Points are normalised to [0, 1] (x to the right, y down) so they survive resizing. Each
reference image has one :class:`PointSet`: at least one positive point on the subject and
any number of negative points on look-alikes.

The serialised form (the ``P3S Points`` node's widget value and API input) is JSON::

    {"version": 1, "images": [{"positive": [[x, y], ...], "negative": [[x, y], ...]}, ...]}

A bare list of image entries (``[{"positive": ..., "negative": ...}, ...]``) is accepted too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from .errors import P3SInputError

FORMAT_VERSION = 1

Point = tuple[float, float]


@dataclass(frozen=True)
class PointSet:
    """Points on one reference image, normalised to [0, 1]."""

    positive: tuple[Point, ...]
    negative: tuple[Point, ...] = field(default=())

    def to_pixels(self, width: int, height: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Integer pixel coordinates (x, y) inside a ``width`` x ``height`` image."""
        return (
            [point_to_pixel(p, width, height) for p in self.positive],
            [point_to_pixel(p, width, height) for p in self.negative],
        )


@dataclass(frozen=True)
class P3SPoints:
    """Point sets for a batch of reference images (the ``P3S_POINTS`` type)."""

    sets: tuple[PointSet, ...]

    def __len__(self) -> int:
        return len(self.sets)

    def for_batch(self, batch_size: int) -> tuple[PointSet, ...]:
        """The first ``batch_size`` sets; an error when there are fewer sets than images."""
        if len(self.sets) < batch_size:
            raise P3SInputError(
                f"{batch_size} reference images but only {len(self.sets)} point set(s): give one point "
                f'set per image (add entries to "images" in the P3S Points JSON, in batch order).'
            )
        return self.sets[:batch_size]

    def to_json(self) -> str:
        """The canonical JSON form (see the module docstring)."""
        images = [
            {"positive": [list(p) for p in s.positive], "negative": [list(p) for p in s.negative]} for s in self.sets
        ]
        return json.dumps({"version": FORMAT_VERSION, "images": images})


def point_to_pixel(point: Point, width: int, height: int) -> tuple[int, int]:
    """Map a normalised point to the pixel that contains it (x = 1.0 maps to the last column)."""
    x, y = point
    return min(int(x * width), width - 1), min(int(y * height), height - 1)


def parse_points_json(text: str) -> P3SPoints:
    """Parse and validate the points JSON; raise :class:`P3SInputError` with a fix on bad input."""
    if not text or not text.strip():
        raise P3SInputError(
            "No points given: click the subject on the P3S Points widget (or send JSON such as "
            '{"images": [{"positive": [[0.5, 0.5]], "negative": []}]}).'
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise P3SInputError(
            f"Points are not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}). Expected "
            '{"images": [{"positive": [[x, y], ...], "negative": [[x, y], ...]}, ...]} with x, y in [0, 1].'
        ) from None
    if isinstance(data, dict):
        version = data.get("version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise P3SInputError(
                f"Points format version {version!r} is not supported (this pack reads "
                f"version {FORMAT_VERSION}); update the pack or re-pick the points."
            )
        entries = data.get("images")
    else:
        entries = data
    if not isinstance(entries, list) or not entries:
        raise P3SInputError('Points JSON needs a non-empty "images" list, one entry per reference image.')
    return P3SPoints(tuple(_parse_set(entry, i) for i, entry in enumerate(entries)))


def make_points(sets: Sequence[tuple[Sequence[Point], Sequence[Point]]]) -> P3SPoints:
    """Build validated points from ``[(positive, negative), ...]`` in Python."""
    return P3SPoints(
        tuple(_parse_set({"positive": list(pos), "negative": list(neg)}, i) for i, (pos, neg) in enumerate(sets))
    )


def _parse_set(entry: object, index: int) -> PointSet:
    where = f"image {index + 1}"
    if not isinstance(entry, dict):
        raise P3SInputError(f'Points for {where} must be an object {{"positive": [...], "negative": [...]}}.')
    positive = _parse_list(entry.get("positive", []), where, "positive")
    negative = _parse_list(entry.get("negative", []), where, "negative")
    if not positive:
        raise P3SInputError(
            f"No positive point on {where}: click the subject once (left click) so the mask knows what "
            "to select; negative points alone cannot define a subject."
        )
    return PointSet(positive, negative)


def _parse_list(raw: object, where: str, kind: str) -> tuple[Point, ...]:
    if not isinstance(raw, list):
        raise P3SInputError(f'"{kind}" points of {where} must be a list of [x, y] pairs.')
    points = []
    for item in raw:
        if isinstance(item, dict) and "x" in item and "y" in item:
            item = [item["x"], item["y"]]
        if (
            not isinstance(item, (list, tuple))
            or len(item) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in item)
        ):
            raise P3SInputError(f"A {kind} point of {where} is {item!r}; each point must be [x, y] numbers.")
        x, y = float(item[0]), float(item[1])
        if not (math.isfinite(x) and math.isfinite(y) and 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise P3SInputError(
                f"A {kind} point of {where} is at ({x:g}, {y:g}), outside the image: points are normalised, "
                "x and y in [0, 1] (divide pixel coordinates by the image width and height)."
            )
        points.append((x, y))
    return tuple(points)
