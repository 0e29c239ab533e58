"""Heat-map previews of the RNGR score over the reference images."""

from __future__ import annotations

import cv2
import numpy as np
import torch


def render_heatmap(
    images: torch.Tensor, scores: torch.Tensor, masks: torch.Tensor, alpha: float = 0.55
) -> torch.Tensor:
    """Blend a colour map of ``scores`` ``[B, H, W]`` over ``images`` and outline ``masks`` in white.

    Returns a ComfyUI IMAGE ``[B, H, W, 3]`` in [0, 1]: blue = unlike the subject, red = like it.
    """
    out = []
    for image, score, mask in zip(images, scores, masks, strict=True):
        rgb = (np.clip(image[..., :3].cpu().numpy(), 0, 1) * 255).astype(np.uint8)
        heat = cv2.applyColorMap((np.clip(score.cpu().numpy(), 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
        heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
        blended = cv2.addWeighted(heat, alpha, rgb, 1 - alpha, 0)
        contours, _ = cv2.findContours(
            (mask.cpu().numpy() > 0.5).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        thickness = max(1, round(max(rgb.shape[:2]) / 256))
        cv2.drawContours(blended, contours, -1, (255, 255, 255), thickness)
        out.append(torch.from_numpy(blended.astype(np.float32) / 255.0))
    return torch.stack(out)
