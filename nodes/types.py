"""Custom ComfyUI socket types of the pack."""

from comfy_api.latest import io

CATEGORY = "P3S"
CATEGORY_SELECT = f"{CATEGORY}/select"

# p3s_core.points.P3SPoints: one normalised point set per reference image.
P3SPointsType = io.Custom("P3S_POINTS")

# p3s_core.p3s_model.P3SModel: trainable U-Net copy, subject encoder, injection layers.
P3SModelType = io.Custom("P3S_MODEL")
