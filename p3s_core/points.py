"""Point supervision [stated]: the user marks the subject with points, one set per image.

Points are normalised to [0, 1] (x to the right, y down) so they survive resizing. Each
reference image has one :class:`PointSet`: at least one positive point on the subject and
any number of negative points on look-alikes.

The serialised form (the ``P3S Points`` node's widget value and API input) is JSON::

    {"version": 1, "images": [{"positive": [[x, y], ...], "negative": [[x, y], ...]}, ...]}

A bare list of image entries (``[{"positive": ..., "negative": ...}, ...]``) is accepted too.

KJNodes' "Points Editor" sends pixel coordinates instead, one JSON string per kind
(``[{"x": 120, "y": 80}, ...]``); :func:`parse_pixel_points` normalises them with the size of
the image they were picked on.
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

    def with_first_set(
        self, positive: Sequence[Point] | None = None, negative: Sequence[Point] | None = None
    ) -> P3SPoints:
        """A copy whose first set takes ``positive`` and/or ``negative`` (``None`` keeps the old list)."""
        first = self.sets[0] if self.sets else PointSet(())
        new_first = _parse_set(
            {
                "positive": list(first.positive if positive is None else positive),
                "negative": list(first.negative if negative is None else negative),
            },
            0,
        )
        return P3SPoints((new_first, *self.sets[1:]))

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


def _number_pair(item: object) -> tuple[float, float] | None:
    """``[x, y]``, ``(x, y)`` or ``{"x": x, "y": y}`` of real numbers as floats; None otherwise."""
    if isinstance(item, dict) and "x" in item and "y" in item:
        item = [item["x"], item["y"]]
    if (
        not isinstance(item, (list, tuple))
        or len(item) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in item)
    ):
        return None
    return float(item[0]), float(item[1])


def _parse_list(raw: object, where: str, kind: str) -> tuple[Point, ...]:
    if not isinstance(raw, list):
        raise P3SInputError(f'"{kind}" points of {where} must be a list of [x, y] pairs.')
    points = []
    for item in raw:
        pair = _number_pair(item)
        if pair is None:
            raise P3SInputError(f"A {kind} point of {where} is {item!r}; each point must be [x, y] numbers.")
        x, y = pair
        if not (math.isfinite(x) and math.isfinite(y) and 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise P3SInputError(
                f"A {kind} point of {where} is at ({x:g}, {y:g}), outside the image: points are normalised, "
                "x and y in [0, 1] (divide pixel coordinates by the image width and height)."
            )
        points.append((x, y))
    return tuple(points)


def parse_pixel_points(text: str, width: int, height: int, kind: str = "positive") -> tuple[Point, ...]:
    """Normalise KJNodes Points Editor coordinates (``[{"x": px, "y": px}, ...]``) to [0, 1].

    ``width`` x ``height`` is the size of the image the points were picked on; a pixel ``x``
    becomes ``x / width``, the inverse of :meth:`PointSet.to_pixels`. An empty string or an
    empty list gives no points.
    """
    if width <= 0 or height <= 0:
        raise P3SInputError(f"Cannot normalise {kind} pixel points on a {width}x{height} image.")
    if not text or not text.strip():
        return ()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise P3SInputError(
            f"The {kind} KJNodes coordinates are not valid JSON ({exc.msg} at column {exc.colno}). Wire the "
            'Points Editor\'s coordinates output, or give [{"x": 120, "y": 80}, ...] in pixels.'
        ) from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise P3SInputError(f'The {kind} KJNodes coordinates must be a list like [{{"x": 120, "y": 80}}, ...].')
    points = []
    for item in data:
        pair = _number_pair(item)
        if pair is None:
            raise P3SInputError(f'A {kind} KJNodes coordinate is {item!r}; each must be {{"x": pixels, "y": pixels}}.')
        x, y = pair
        if not (math.isfinite(x) and math.isfinite(y) and 0.0 <= x <= width and 0.0 <= y <= height):
            raise P3SInputError(
                f"A {kind} KJNodes point is at pixel ({x:g}, {y:g}), outside the {width}x{height} image on "
                "the P3S Points node's image input: set the Points Editor's width and height to that "
                "image's size."
            )
        points.append((x / width, y / height))
    return tuple(points)
