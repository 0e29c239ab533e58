"""``P3S Points``: the user's point selection as ``P3S_POINTS``, plus a preview of it.

The ``points`` STRING widget is the single source of truth: the point-picking canvas in
``web/p3s_points.js`` reads and writes it, so the workflow JSON (``widgets_values``) and
API prompts carry the same JSON string that this node parses.
"""

from __future__ import annotations

import torch
from comfy_api.latest import io, ui

from ..p3s_core.errors import P3SInputError
from ..p3s_core.points import P3SPoints, parse_pixel_points, parse_points_json
from ..p3s_core.preview import downscale_for_display, draw_points
from .types import CATEGORY_SELECT, P3SPointsType

EXAMPLE_POINTS = '{"version": 1, "images": [{"positive": [[0.5, 0.5]], "negative": []}]}'
# The widget shows the reference images at most this large (the node's ``ui`` output).
DISPLAY_MAX_SIDE = 1024
# Without an image input the preview shows the points on a neutral grey square of this size.
BLANK_PREVIEW_SIDE = 512
UI_IMAGES_KEY = "p3s_images"


class P3SPointsNode(io.ComfyNode):
    """Holds one point set per reference image, normalised to [0, 1]."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="P3SPoints",
            display_name="P3S Points",
            category=CATEGORY_SELECT,
            description="Select the subject in each reference image with points: left click on the subject "
            "(positive), right click or shift+click on look-alikes (negative). Coordinates are "
            "normalised to [0, 1] (x right, y down), one point set per image of the batch.",
            is_output_node=True,
            inputs=[
                io.String.Input(
                    "points",
                    multiline=True,
                    default=EXAMPLE_POINTS,
                    tooltip='JSON: {"images": [{"positive": [[x, y], ...], "negative": [[x, y], ...]}, ...]},'
                    " one entry per reference image in batch order, x and y in [0, 1]. The canvas "
                    "widget edits it.",
                ),
                io.Image.Input(
                    "image",
                    optional=True,
                    tooltip="The reference image(s): shown in the widget and used for the preview output.",
                ),
                io.String.Input(
                    "kj_positive",
                    optional=True,
                    force_input=True,
                    tooltip="KJNodes Points Editor positive coordinates (pixels); replaces the positive "
                    "points of image 1. Needs the image input for the size.",
                ),
                io.String.Input(
                    "kj_negative",
                    optional=True,
                    force_input=True,
                    tooltip="KJNodes Points Editor negative coordinates (pixels); replaces the negative "
                    "points of image 1. Needs the image input for the size.",
                ),
            ],
            outputs=[
                P3SPointsType.Output("point_sets", display_name="points", tooltip="Point sets for the RNGR mask."),
                io.Image.Output(
                    "preview", display_name="preview", tooltip="The image(s) with the points drawn on them."
                ),
            ],
        )

    @classmethod
    def execute(
        cls,
        points: str,
        image: torch.Tensor | None = None,
        kj_positive: str | None = None,
        kj_negative: str | None = None,
    ) -> io.NodeOutput:
        selection = parse_points_json(points)
        if kj_positive or kj_negative:
            selection = _apply_kj_points(selection, image, kj_positive, kj_negative)
        if image is None:
            blank = torch.full((BLANK_PREVIEW_SIDE, BLANK_PREVIEW_SIDE, 3), 0.5)
            preview = draw_points(blank, selection.sets[0])[None]
            return io.NodeOutput(selection, preview)
        sets = selection.for_batch(image.shape[0])
        preview = torch.stack([draw_points(frame, point_set) for frame, point_set in zip(image, sets, strict=True)])
        shown = downscale_for_display(image, DISPLAY_MAX_SIDE)
        saved = ui.ImageSaveHelper.save_images(
            shown, filename_prefix="p3s_points", folder_type=io.FolderType.temp, cls=None, compress_level=1
        )
        return io.NodeOutput(selection, preview, ui={UI_IMAGES_KEY: saved})


def _apply_kj_points(
    selection: P3SPoints, image: torch.Tensor | None, kj_positive: str | None, kj_negative: str | None
) -> P3SPoints:
    if image is None:
        raise P3SInputError(
            "KJNodes coordinates are in pixels: connect the image they were picked on to the P3S Points "
            "node's image input, so they can be normalised."
        )
    height, width = int(image.shape[1]), int(image.shape[2])
    positive = parse_pixel_points(kj_positive, width, height, "positive") if kj_positive else None
    negative = parse_pixel_points(kj_negative, width, height, "negative") if kj_negative else None
    return selection.with_first_set(positive, negative)
