"""``P3S Points``: the user's point selection as ``P3S_POINTS``, plus a preview of it.

The ``points`` STRING widget is the single source of truth: the point-picking canvas in
``web/p3s_points_editor.js`` reads and writes it, so the workflow JSON (``widgets_values``) and
API prompts carry the same JSON string that this node parses.

Not an output node: it runs when something uses its points or preview, so a prompt whose other
nodes are invalid is refused as a whole. Its ``ui`` images (what the widget shows after a run,
through ``onExecuted``) are sent for any node that runs, with the point sets it used (``p3s_points``),
so the widget can draw points that came from the KJ inputs.
"""

from __future__ import annotations

import torch
from comfy_api.latest import io, ui

from ..p3s_core.errors import P3SInputError
from ..p3s_core.inspection.preview import downscale_for_display, draw_points
from ..p3s_core.selection.points import parse_kj_points, parse_points_json
from .types import CATEGORY_SELECT, P3SPointsType

EXAMPLE_POINTS = '{"version": 1, "images": [{"positive": [[0.5, 0.5]], "negative": []}]}'
# The widget shows the reference images at most this large (the node's ``ui`` output).
DISPLAY_MAX_SIDE = 1024
# Without an image input the preview shows the points on a neutral grey square of this size.
BLANK_PREVIEW_SIDE = 512
UI_IMAGES_KEY = "p3s_images"
# The point sets the run used, for the widget to draw; "kj" lists the kinds of image 1 that came from
# the kj_positive / kj_negative inputs.
UI_POINTS_KEY = "p3s_points"


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
                    tooltip="KJNodes Points Editor positive coordinates (pixels, or fractions with its normalize "
                    "on); replace the positive points of image 1. Pixels need kj_width/kj_height or the image.",
                ),
                io.String.Input(
                    "kj_negative",
                    optional=True,
                    force_input=True,
                    tooltip="KJNodes Points Editor negative coordinates (pixels, or fractions with its normalize "
                    "on); replace the negative points of image 1. Pixels need kj_width/kj_height or the image.",
                ),
                io.Int.Input(
                    "kj_width",
                    default=0,
                    min=0,
                    max=16384,
                    optional=True,
                    tooltip="Width of the image the KJNodes points were picked on (the Points Editor's width); "
                    "0 = the image input's width.",
                ),
                io.Int.Input(
                    "kj_height",
                    default=0,
                    min=0,
                    max=16384,
                    optional=True,
                    tooltip="Height of the image the KJNodes points were picked on (the Points Editor's height); "
                    "0 = the image input's height.",
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
        kj_width: int = 0,
        kj_height: int = 0,
    ) -> io.NodeOutput:
        selection = parse_points_json(points)
        kj_kinds = [kind for kind, text in (("positive", kj_positive), ("negative", kj_negative)) if text]
        if kj_kinds:
            size = _kj_pixel_size(image, kj_width, kj_height)
            positive = parse_kj_points(kj_positive, "positive", size) if kj_positive else None
            negative = parse_kj_points(kj_negative, "negative", size) if kj_negative else None
            selection = selection.with_first_set(positive, negative)
        used = {**selection.to_dict(), "kj": kj_kinds}
        if image is None:
            blank = torch.full((BLANK_PREVIEW_SIDE, BLANK_PREVIEW_SIDE, 3), 0.5)
            preview = draw_points(blank, selection.sets[0])[None]
            return io.NodeOutput(selection, preview, ui={UI_POINTS_KEY: [used]})
        sets = selection.for_batch(image.shape[0])
        preview = torch.stack([draw_points(frame, point_set) for frame, point_set in zip(image, sets, strict=True)])
        shown = downscale_for_display(image, DISPLAY_MAX_SIDE)
        saved = ui.ImageSaveHelper.save_images(
            shown, filename_prefix="p3s_points", folder_type=io.FolderType.temp, cls=None, compress_level=1
        )
        return io.NodeOutput(selection, preview, ui={UI_IMAGES_KEY: saved, UI_POINTS_KEY: [used]})


def _kj_pixel_size(image: torch.Tensor | None, kj_width: int, kj_height: int) -> tuple[int, int] | None:
    """The size KJNodes pixel points refer to: kj_width x kj_height, else the image input's, else unknown."""
    if (kj_width > 0) != (kj_height > 0):
        raise P3SInputError(
            f"kj_width is {kj_width} and kj_height is {kj_height}: set both to the Points Editor's width and height, "
            "or both to 0 to use the image input's size."
        )
    if kj_width > 0:
        return int(kj_width), int(kj_height)
    if image is not None:
        return int(image.shape[2]), int(image.shape[1])
    return None
