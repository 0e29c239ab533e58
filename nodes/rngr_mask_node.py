"""``P3S RNGR Mask``: subject and negative masks from points and CLIP patch similarity."""

from __future__ import annotations

import comfy.model_management
import torch
from comfy_api.latest import io, ui

from ..p3s_core.errors import P3SInputError
from ..p3s_core.inspection.heatmap import render_heatmap
from ..p3s_core.selection.letterbox import letterbox_pixels
from ..p3s_core.selection.rngr_mask import RngrSettings, rngr_masks
from .types import CATEGORY_SELECT, P3SPointsType


def encode_patch_tokens(clip_vision, images: torch.Tensor, layer: int) -> torch.Tensor:
    """Letterbox ``images`` for ``clip_vision`` and return its patch tokens ``[B, N, C]`` at ``layer``."""
    model = clip_vision.model
    num_layers = len(model.vision_model.encoder.layers)
    if not -num_layers <= layer <= -1:
        raise P3SInputError(
            f"layer {layer} does not exist: this CLIP vision model has {num_layers} layers, "
            f"choose -1 (last) to -{num_layers}; -2 (penultimate) is the default."
        )
    if getattr(model.vision_model.embeddings, "class_embedding", None) is None:
        raise P3SInputError(
            "This image encoder has no class token (SigLIP?): load the CLIP ViT-L/14 vision "
            "model (clip_vision folder) that SD1.5 pairs with."
        )
    comfy.model_management.load_model_gpu(clip_vision.patcher)
    pixels = letterbox_pixels(images, clip_vision.image_size, clip_vision.image_mean, clip_vision.image_std)
    _, hidden, _, _ = model(pixel_values=pixels.to(clip_vision.load_device), intermediate_output=layer)
    return hidden[:, 1:].float().cpu()


class P3SRngrMask(io.ComfyNode):
    """RNGR: keep what the positive points pick, drop what the negative points pick."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="P3SRngrMask",
            display_name="P3S RNGR Mask",
            category=CATEGORY_SELECT,
            description="Subject mask from points (paper eq. 1-2): CLIP patch similarity to the positive points, "
            "reduced by similarity to the negative points, Gaussian, Otsu, and only the parts "
            "connected to a positive point. Also the look-alikes' mask for P3S Inpaint.",
            inputs=[
                io.Image.Input("images", tooltip="Reference images (a batch of 3-5 photos of the subject)."),
                P3SPointsType.Input("points", tooltip="One point set per image, from P3S Points."),
                io.ClipVision.Input("clip_vision", tooltip="CLIP ViT-L/14 vision model (clip_vision folder)."),
                io.Int.Input(
                    "layer",
                    default=-2,
                    min=-48,
                    max=-1,
                    tooltip="Encoder layer whose patch tokens are compared: -1 last, -2 penultimate.",
                ),
                io.Float.Input(
                    "sigma",
                    default=1.0,
                    min=0.0,
                    max=8.0,
                    step=0.1,
                    tooltip="Gaussian smoothing of the similarity map, in patches (1 patch = "
                    "1/16 of the longer image side).",
                ),
                io.Int.Input(
                    "dilation",
                    default=8,
                    min=0,
                    max=256,
                    tooltip="Grow both masks by this many pixels (the paper's expanded mask).",
                ),
                io.Boolean.Input(
                    "gate_negatives",
                    default=True,
                    optional=True,
                    tooltip="Let negative points suppress only what is closer to them than to a "
                    "positive point (separates near-identical look-alikes). Off: the "
                    "paper's eq. 2 literally.",
                ),
            ],
            outputs=[
                io.Mask.Output("subject_mask", tooltip="The selected subject (1) per image."),
                io.Mask.Output("negative_mask", tooltip="Look-alikes picked by negative points: inpaint them away."),
                io.Image.Output("heatmap", tooltip="Similarity score over the images, mask outlined."),
            ],
        )

    @classmethod
    def execute(
        cls, images, points, clip_vision, layer: int, sigma: float, dilation: int, gate_negatives: bool = True
    ) -> io.NodeOutput:
        point_sets = points.for_batch(images.shape[0])  # every check runs before the CLIP encode
        settings = RngrSettings(sigma=sigma, dilation=dilation, gate_negatives=gate_negatives)
        tokens = encode_patch_tokens(clip_vision, images, layer)
        masks = rngr_masks(tokens, (images.shape[1], images.shape[2]), point_sets, settings)
        heatmap = render_heatmap(images, masks.score, masks.subject)
        return io.NodeOutput(masks.subject, masks.negative, heatmap, ui=ui.PreviewImage(heatmap, cls=cls))
