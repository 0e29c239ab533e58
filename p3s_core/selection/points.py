"""Point supervision [stated]: the user marks the subject with points, one set per image.

Points are normalised to [0, 1] (x to the right, y down) so they survive resizing. Each
reference image has one :class:`PointSet`: at least one positive point on the subject and
any number of negative points on look-alikes.

The serialised form (the ``P3S Points`` node's widget value and API input) is JSON::

    {"version": 1, "images": [{"positive": [[x, y], ...], "negative": [[x, y], ...]}, ...]}

A bare list of image entries (``[{"positive": ..., "negative": ...}, ...]``) is accepted too.

KJNodes' "Points Editor" sends pixel (or, with its ``normalize`` on, normalised) coordinates
instead, one JSON string per kind (``[{"x": 120, "y": 80}, ...]``); :func:`parse_kj_points`
normalises them with the size of the image they were picked on.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import P3SInputError
from ..validation import excerpt, parse_json

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
        """The sets of a batch of ``batch_size`` images: one each, fewer or more sets are an error."""
        if len(self.sets) < batch_size:
            raise P3SInputError(
                f"{batch_size} reference images but only {len(self.sets)} point set(s): give one point "
                f'set per image (add entries to "images" in the P3S Points JSON, in batch order).'
            )
        if len(self.sets) > batch_size:
            raise P3SInputError(
                f"{len(self.sets)} point sets for {batch_size} reference image(s): give one point set per image "
                f'(remove the last {len(self.sets) - batch_size} entries of "images" in the P3S Points JSON, or add '
                "the missing images to the batch)."
            )
        return self.sets

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

    def to_dict(self) -> dict:
        """The canonical form as plain, JSON-able data (see the module docstring)."""
        images = [
            {"positive": [list(p) for p in s.positive], "negative": [list(p) for p in s.negative]} for s in self.sets
        ]
        return {"version": FORMAT_VERSION, "images": images}

    def to_json(self) -> str:
        """The canonical JSON form (see the module docstring)."""
        return json.dumps(self.to_dict())


def point_to_pixel(point: Point, width: int, height: int) -> tuple[int, int]:
    """Map a normalised point to the pixel that contains it (x = 1.0 maps to the last column)."""
    x, y = point
    return min(int(x * width), width - 1), min(int(y * height), height - 1)


POINTS_FORMAT = '{"images": [{"positive": [[x, y], ...], "negative": [[x, y], ...]}, ...]} with x, y in [0, 1]'
_TOP_KEYS = ("version", "images")
_SET_KEYS = ("positive", "negative")
_KJ_HINT = (
    "these look like KJNodes Points Editor pixel coordinates: connect the Points Editor's positive_coords "
    "output to kj_positive (and negative_coords to kj_negative) instead of pasting them into points"
)


def parse_points_json(text: str | dict | list) -> P3SPoints:
    """Parse and validate the points JSON; raise :class:`P3SInputError` with a fix on bad input.

    Accepts the JSON text, or the same as a dict or list (API users sending an object: ComfyUI
    hands it over as its Python form, which is read too). The version may be ``1`` or ``"1"``.
    """
    if isinstance(text, str) and not text.strip():
        raise P3SInputError(
            "No points given: click the subject on the P3S Points widget (or send JSON such as "
            '{"images": [{"positive": [[0.5, 0.5]], "negative": []}]}).'
        )
    data = parse_json(text, "The points", POINTS_FORMAT)
    if isinstance(data, dict) and set(data) and set(data) <= set(_SET_KEYS):
        data = [data]  # one image's set without the "images" list (e.g. KJNodes' points_store)
    if isinstance(data, dict):
        _refuse_unknown_keys(data, _TOP_KEYS, "The points JSON")
        version = data.get("version", FORMAT_VERSION)
        if version not in (FORMAT_VERSION, str(FORMAT_VERSION)) or isinstance(version, bool):
            raise P3SInputError(
                f"Points format version {excerpt(version)} is not one this pack reads: give "
                f'"version": {FORMAT_VERSION} (or leave it out), or update the pack if the points come from a '
                "newer one."
            )
        entries = data.get("images")
    else:
        entries = data
    if isinstance(entries, list) and entries and all(_is_xy_object(item) for item in entries):
        raise P3SInputError(f"The points are a list of points, not of images: {_KJ_HINT}.")
    if isinstance(entries, list) and entries and all(_number_pair(item) is not None for item in entries):
        raise P3SInputError(
            'The points are a list of [x, y] pairs, not of images: wrap them as {"images": [{"positive": '
            f"{excerpt(entries, 30)}}}]}}."
        )
    if not isinstance(entries, list) or not entries:
        raise P3SInputError('Points JSON needs a non-empty "images" list, one entry per reference image.')
    return P3SPoints(tuple(_parse_set(entry, i) for i, entry in enumerate(entries)))


def _is_xy_object(item: object) -> bool:
    return isinstance(item, dict) and {"x", "y"} <= set(item) and set(item) <= {"x", "y"}


def _refuse_unknown_keys(data: dict, known: Sequence[str], where: str) -> None:
    unknown = [key for key in data if key not in known]
    if not unknown:
        return
    names = []
    for key in unknown[:3]:
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        names.append(excerpt(key, 30) + (f" (did you mean {close[0]!r}?)" if close else ""))
    more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
    raise P3SInputError(
        f"{where} has unknown key(s) {', '.join(names)}{more}: the keys are {', '.join(repr(k) for k in known)}."
    )


def make_points(sets: Sequence[tuple[Sequence[Point], Sequence[Point]]]) -> P3SPoints:
    """Build validated points from ``[(positive, negative), ...]`` in Python."""
    return P3SPoints(
        tuple(_parse_set({"positive": list(pos), "negative": list(neg)}, i) for i, (pos, neg) in enumerate(sets))
    )


def _parse_set(entry: object, index: int) -> PointSet:
    where = f"image {index + 1}"
    if not isinstance(entry, dict):
        raise P3SInputError(
            f'Points for {where} must be an object {{"positive": [...], "negative": [...]}}, not {excerpt(entry)}.'
        )
    _refuse_unknown_keys(entry, _SET_KEYS, f"The points of {where}")
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
        raise P3SInputError(f'"{kind}" points of {where} must be a list of [x, y] pairs, not {excerpt(raw)}.')
    points = []
    for item in raw:
        pair = _number_pair(item)
        if pair is None:
            raise P3SInputError(f"A {kind} point of {where} is {excerpt(item)}; each point must be [x, y] numbers.")
        x, y = pair
        if _is_xy_object(item) and math.isfinite(x) and math.isfinite(y) and max(x, y) > 1.0:
            raise P3SInputError(f"A {kind} point of {where} is at ({x:g}, {y:g}): {_KJ_HINT}.")
        if not (math.isfinite(x) and math.isfinite(y) and 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise P3SInputError(
                f"A {kind} point of {where} is at ({x:g}, {y:g}), outside the image: points are normalised, "
                "x and y in [0, 1] (divide pixel coordinates by the image width and height)."
            )
        points.append((x, y))
    return tuple(points)


def parse_kj_points(text: str | None, kind: str, pixel_size: tuple[int, int] | None) -> tuple[Point, ...]:
    """KJNodes Points Editor coordinates (``[{"x": 120, "y": 80}, ...]``) normalised to [0, 1].

    ``text`` is the editor's ``positive_coords`` / ``negative_coords`` output (``json.dumps`` of
    a list of ``{"x", "y"}``), or its ``coordinates`` widget value. With the editor's
    ``normalize`` on, values are already fractions: a list whose values all lie in [0, 1] is
    taken as normalised [reconstructed: the editor's output does not say which it is, and a
    pixel list within [0, 1] marks at most the top-left 2x2 pixels]. Otherwise the values are
    pixels of a ``pixel_size`` = ``(width, height)`` image (the editor's canvas size), and
    ``x / width``, ``y / height`` is returned; without a size, pixel values are an error.
    Empty text, ``""`` (the editor's negative output without negatives) and ``[]`` give no points.
    """
    label = f"kj_{kind}"
    if text is None or not str(text).strip():
        return ()
    data = parse_json(
        text,
        f"The {label} coordinates",
        '[{"x": 120, "y": 80}, ...] from KJNodes\' Points Editor',
        accept=lambda d: isinstance(d, (dict, list, str)),
    )
    if data == "" or data is None:
        return ()
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise P3SInputError(
            f'The {label} coordinates must be a list like [{{"x": 120, "y": 80}}, ...], not {excerpt(text)}: wire '
            "the Points Editor's positive_coords or negative_coords output."
        )
    pairs = []
    for item in data:
        pair = _number_pair(item)
        if pair is None or not all(math.isfinite(v) and v >= 0 for v in pair):
            raise P3SInputError(
                f'A {label} coordinate is {excerpt(item)}; each must be {{"x": x, "y": y}} with finite values >= 0 '
                "(pixels, or fractions in [0, 1] with the editor's normalize on)."
            )
        pairs.append(pair)
    if all(v <= 1.0 for pair in pairs for v in pair):
        return tuple(pairs)  # the editor's normalize=True
    if pixel_size is None:
        raise P3SInputError(
            f"The {label} coordinates are pixels, but of which image size is unknown: set kj_width and kj_height "
            "to the Points Editor's width and height, connect the image they were picked on to the P3S Points "
            "node's image input, or turn the editor's normalize on."
        )
    width, height = pixel_size
    points = []
    for x, y in pairs:
        if x > width or y > height:
            raise P3SInputError(
                f"A {label} point is at pixel ({x:g}, {y:g}), outside the {width}x{height} image the points are "
                "read on: set kj_width and kj_height to the Points Editor's width and height (the size the "
                "points were picked on)."
            )
        points.append((x / width, y / height))
    return tuple(points)
