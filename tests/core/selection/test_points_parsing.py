"""The two point formats the P3S Points node reads: its own JSON and KJNodes pixel coordinates."""

import json

import pytest

from p3s_core.errors import P3SInputError
from p3s_core.selection.points import PointSet, make_points, parse_kj_points, parse_points_json


def test_p3s_json_round_trips_through_to_json():
    text = json.dumps(
        {
            "version": 1,
            "images": [
                {"positive": [[0.1, 0.2], [0.3, 0.4]], "negative": [[0.9, 0.8]]},
                {"positive": [[0.5, 0.5]], "negative": []},
            ],
        }
    )
    points = parse_points_json(text)
    assert len(points) == 2
    assert points.sets[0] == PointSet(((0.1, 0.2), (0.3, 0.4)), ((0.9, 0.8),))
    assert parse_points_json(points.to_json()) == points


def test_p3s_json_accepts_bare_list_and_xy_objects():
    points = parse_points_json('[{"positive": [{"x": 0.25, "y": 0.75}]}]')
    assert points.sets == (PointSet(((0.25, 0.75),), ()),)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "No points given"),
        ("{not json", "not valid JSON"),
        ('{"version": 2, "images": []}', "version 2 is not one this pack reads"),
        ('{"images": []}', 'non-empty "images" list'),
        ('{"images": [{"positive": [], "negative": [[0.1, 0.1]]}]}', "No positive point on image 1"),
        ('{"images": [{"positive": [[0.5, 1.5]]}]}', "outside the image"),
        ('{"images": [{"positive": [[0.5]]}]}', "must be [x, y] numbers"),
        ('{"images": [{"positive": [[true, 0.5]]}]}', "must be [x, y] numbers"),
        ('{"images": [{"positive": [[0.5, 0.5]]}, {"positive": []}]}', "image 2"),
    ],
)
def test_bad_p3s_json_says_what_to_do(text, fragment):
    with pytest.raises(P3SInputError) as info:
        parse_points_json(text)
    assert fragment in str(info.value)


def test_kj_pixel_points_are_normalised_by_image_size():
    points = parse_kj_points('[{"x": 120, "y": 80}, {"x": 0, "y": 199}]', "positive", (400, 200))
    assert [c for point in points for c in point] == pytest.approx([0.3, 0.4, 0.0, 0.995])
    # Normalising is the inverse of PointSet.to_pixels: the same pixels come back.
    assert PointSet(points).to_pixels(400, 200)[0] == [(120, 80), (0, 199)]


def test_kj_empty_strings_give_no_points():
    assert parse_kj_points("", "negative", (10, 10)) == ()
    assert parse_kj_points("[]", "negative", (10, 10)) == ()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[{x: 1}]", "not valid JSON"),
        ('[{"x": 500, "y": 10}]', "outside the 400x200 image"),
        ('[{"x": -1, "y": 10}]', "finite values >= 0"),
        ('[{"x": "a", "y": 10}]', 'must be {"x": x'),
        ('"120,80"', "must be a list"),
    ],
)
def test_bad_kj_strings_say_what_to_do(text, fragment):
    with pytest.raises(P3SInputError) as info:
        parse_kj_points(text, "negative", (400, 200))
    assert fragment in str(info.value)
    assert "kj_negative" in str(info.value)


def test_with_first_set_replaces_only_the_given_kind_of_image_one():
    points = make_points([([(0.5, 0.5)], [(0.1, 0.1)]), ([(0.2, 0.2)], [])])
    replaced = points.with_first_set(positive=[(0.7, 0.3)])
    assert replaced.sets[0] == PointSet(((0.7, 0.3),), ((0.1, 0.1),))
    assert replaced.sets[1] == points.sets[1]
    with pytest.raises(P3SInputError, match="No positive point on image 1"):
        points.with_first_set(positive=[])
