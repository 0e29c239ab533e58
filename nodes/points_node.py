"""``P3S Points``: the user's point selection as ``P3S_POINTS``."""

from __future__ import annotations

from comfy_api.latest import io

from ..p3s_core.points import parse_points_json
from .types import CATEGORY_SELECT, P3SPointsType

EXAMPLE_POINTS = '{"version": 1, "images": [{"positive": [[0.5, 0.5]], "negative": []}]}'


class P3SPointsNode(io.ComfyNode):
    """Holds one point set per reference image, normalised to [0, 1]."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="P3SPoints",
            display_name="P3S Points",
            category=CATEGORY_SELECT,
            description="Select the subject in each reference image with points: positive on the subject, "
            "negative on look-alikes. Coordinates are normalised to [0, 1] (x right, y down).",
            inputs=[
                io.String.Input(
                    "points",
                    multiline=True,
                    default=EXAMPLE_POINTS,
                    tooltip='JSON: {"images": [{"positive": [[x, y], ...], "negative": [[x, y], ...]}, ...]}, '
                    "one entry per reference image in batch order, x and y in [0, 1].",
                ),
            ],
            outputs=[
                P3SPointsType.Output("point_sets", display_name="points", tooltip="Point sets for the RNGR mask.")
            ],
        )

    @classmethod
    def execute(cls, points: str) -> io.NodeOutput:
        return io.NodeOutput(parse_points_json(points))
