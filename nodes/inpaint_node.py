"""``P3S Inpaint``: erase look-alikes or everything but the subject."""

from __future__ import annotations

from comfy_api.latest import io

from ..p3s_core.selection.inpaint import INPAINT_METHODS, inpaint
from .types import CATEGORY_SELECT


class P3SInpaint(io.ComfyNode):
    """OpenCV inpainting of a mask, or a flat fill outside it."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="P3SInpaint",
            display_name="P3S Inpaint",
            category=CATEGORY_SELECT,
            description="Clean the reference images for training: 'telea' / 'navier_stokes' inpaint the mask away "
            "(wire the RNGR negative_mask); 'fill_outside' keeps the mask and fills the rest "
            "(wire the subject_mask). For diffusion-quality fills use ComfyUI's inpainting instead.",
            inputs=[
                io.Image.Input("images", tooltip="The reference images to clean (a batch)."),
                io.Mask.Input("mask", tooltip="One mask per image, or one for all."),
                io.Combo.Input(
                    "method",
                    options=list(INPAINT_METHODS),
                    default="telea",
                    tooltip="telea / navier_stokes: fill the masked area from its surroundings. "
                    "fill_outside: keep the masked area, fill everything else with 'fill'.",
                ),
                io.Int.Input("radius", default=5, min=1, max=64, tooltip="Inpainting neighbourhood in pixels."),
                io.Float.Input(
                    "fill",
                    default=0.5,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Grey level for fill_outside (0 black, 1 white).",
                ),
            ],
            outputs=[io.Image.Output("cleaned", tooltip="The cleaned images.")],
        )

    @classmethod
    def execute(cls, images, mask, method: str, radius: int, fill: float) -> io.NodeOutput:
        return io.NodeOutput(inpaint(images, mask, method=method, radius=radius, fill=fill))
