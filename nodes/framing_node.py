"""``P3S Frame Subject``: each reference cropped to a square around its subject, the mask alike."""

from __future__ import annotations

from comfy_api.latest import io

from ..p3s_core.selection.framing import DEFAULT_MARGIN, MAX_MARGIN, frame_references
from .types import CATEGORY_SELECT


def frame_inputs(optional: bool = False) -> list:
    """The margin input of subject framing (P3S Frame Subject and P3S Fine-tune)."""
    return [
        io.Float.Input(
            "frame_margin",
            default=DEFAULT_MARGIN,
            min=0.0,
            max=MAX_MARGIN,
            step=0.05,
            optional=optional,
            tooltip="Space kept around the subject's box on each side, as a share of its longer side (0.25 = a "
            "quarter). The square never leaves the image unless the subject is wider than the image is tall.",
        ),
    ]


class P3SFrameSubject(io.ComfyNode):
    """Crops every reference to its subject (our addition), so a small subject beside look-alikes fills the frame."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="P3SFrameSubject",
            display_name="P3S Frame Subject",
            category=CATEGORY_SELECT,
            description="Crop each reference image to a square around its subject (the mask's box plus a margin) "
            "and resize it, the mask alike: a subject that is small or beside look-alikes then fills the "
            "training image. P3S Fine-tune's frame_subject does the same inside; use this node to see the "
            "crops, or to give P3S Apply the same references.",
            inputs=[
                io.Image.Input("images", tooltip="The reference images (a batch), e.g. cleaned by P3S Inpaint."),
                io.Mask.Input("subject_mask", tooltip="One subject mask per image (P3S RNGR Mask), or one for all."),
                *frame_inputs(),
                io.Int.Input("resolution", default=512, min=64, max=2048, step=8, tooltip="Side of the square crops."),
            ],
            outputs=[
                io.Image.Output("framed_images", tooltip="The square crops, resolution x resolution."),
                io.Mask.Output("framed_mask", tooltip="The subject masks cropped alike."),
            ],
        )

    @classmethod
    def execute(cls, images, subject_mask, frame_margin: float, resolution: int) -> io.NodeOutput:
        framed, framed_masks, _ = frame_references(images[..., :3], subject_mask, resolution, frame_margin)
        return io.NodeOutput(framed, framed_masks)
