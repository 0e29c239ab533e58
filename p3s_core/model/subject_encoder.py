"""The RNGR subject encoder: CLIP patch tokens + subject mask -> latent-shaped hint.

[stated] "enhance subject presentation by image-image cross-attention"; "the processed image is
encoded to be a latent embedding and added to the original image embedding".
[reconstructed] Queries, keys and values come from the CLIP patch tokens (penultimate layer) of
the cleaned (inpainted) reference; the subject mask, taken to the patch grid, is an additive
logit bias on the keys (+b inside, -b outside, SSR-Encoder style). The attended grid is
upsampled to the latent size, projected to the latent channels by a zero-initialised
convolution and added to the VAE latent of the same image: that sum is the **hint**. At
initialisation the hint is the VAE latent itself.

``hint_region`` (our addition, measured in the toy world): ``subject`` (new models) takes that
VAE latent times the subject mask at latent size, so the hint shows the subject and nothing of
its background; ``image`` (files made before the option) the whole latent.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import P3SInputError

DEFAULT_ENCODER_CONFIG = {
    "token_dim": 1024,  # CLIP ViT-L/14 hidden size
    "inner_dim": 320,
    "heads": 8,
    "latent_channels": 4,
    "mask_bias": 2.0,
    "hint_region": "subject",
}
HINT_REGIONS = ("subject", "image")
LEGACY_HINT_REGION = "image"  # saved encoder configs without the key (made before the option)


def patch_grid_side(num_tokens: int) -> tuple[int, bool]:
    """Side of the square patch grid for a token count, and whether a CLS token leads."""
    for has_cls in (True, False):
        side = math.isqrt(num_tokens - int(has_cls))
        if side > 0 and side * side == num_tokens - int(has_cls):
            return side, has_cls
    raise P3SInputError(
        f"CLIP gave {num_tokens} tokens, which is no square grid of patches (with or without a CLS "
        "token). Use a ViT CLIP vision model such as clip-vit-large-patch14."
    )


def mask_to_patch_grid(mask: torch.Tensor, side: int, pad_to_square: bool) -> torch.Tensor:
    """Area-average a ``[B, H, W]`` mask in [0, 1] onto the ``side x side`` CLIP patch grid.

    ``pad_to_square`` must match how the pixels went into CLIP: True for a centred letterbox
    (zero padding on the short side), False for a stretch to the square.
    """
    if mask.dim() != 3:
        raise P3SInputError(f"The subject mask must be [batch, height, width]; got shape {tuple(mask.shape)}.")
    m = mask.float().unsqueeze(1)
    if pad_to_square:
        h, w = m.shape[-2:]
        size = max(h, w)
        top, left = (size - h) // 2, (size - w) // 2
        m = F.pad(m, (left, size - w - left, top, size - h - top))
    return F.adaptive_avg_pool2d(m, side).squeeze(1).clamp(0.0, 1.0)


class SubjectEncoder(nn.Module):
    """Image-image cross-attention over CLIP patch tokens, biased by the subject mask."""

    def __init__(
        self,
        token_dim: int,
        inner_dim: int,
        heads: int,
        latent_channels: int,
        mask_bias: float,
        hint_region: str = LEGACY_HINT_REGION,
    ):
        super().__init__()
        if inner_dim % heads:
            raise P3SInputError(f"inner_dim {inner_dim} must be a multiple of heads {heads}.")
        if hint_region not in HINT_REGIONS:
            raise P3SInputError(f"hint_region must be one of {HINT_REGIONS}, not {hint_region!r}.")
        self.config = {
            "token_dim": token_dim,
            "inner_dim": inner_dim,
            "heads": heads,
            "latent_channels": latent_channels,
            "mask_bias": mask_bias,
            "hint_region": hint_region,
        }
        self.heads = heads
        self.mask_bias = mask_bias
        self.norm = nn.LayerNorm(token_dim)
        self.to_q = nn.Linear(token_dim, inner_dim, bias=False)
        self.to_k = nn.Linear(token_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(token_dim, inner_dim, bias=False)
        self.to_out = nn.Linear(inner_dim, inner_dim)
        self.to_latent = nn.Conv2d(inner_dim, latent_channels, 3, padding=1)
        nn.init.zeros_(self.to_latent.weight)
        nn.init.zeros_(self.to_latent.bias)

    @classmethod
    def from_config(cls, config: dict) -> SubjectEncoder:
        """Build from a config dict (missing keys take ``DEFAULT_ENCODER_CONFIG``; a missing
        ``hint_region`` is ``image``, as every config made before the option)."""
        merged = {**DEFAULT_ENCODER_CONFIG, "hint_region": LEGACY_HINT_REGION, **config}
        return cls(
            int(merged["token_dim"]),
            int(merged["inner_dim"]),
            int(merged["heads"]),
            int(merged["latent_channels"]),
            float(merged["mask_bias"]),
            str(merged["hint_region"]),
        )

    def attend(self, tokens: torch.Tensor, mask_grid: torch.Tensor) -> torch.Tensor:
        """``[B, N(+1), D]`` tokens and ``[B, g, g]`` mask -> attended features ``[B, inner, g, g]``."""
        if tokens.shape[-1] != self.config["token_dim"]:
            raise P3SInputError(
                f"This P3S model was built for CLIP tokens of width {self.config['token_dim']}, but the CLIP "
                f"vision model gives {tokens.shape[-1]}. Use the CLIP vision model the P3S model was made "
                "with."
            )
        side, has_cls = patch_grid_side(tokens.shape[1])
        if has_cls:
            tokens = tokens[:, 1:]
        if mask_grid.shape[0] != tokens.shape[0] or tuple(mask_grid.shape[1:]) != (side, side):
            raise P3SInputError(
                f"Mask grid {tuple(mask_grid.shape)} does not match {tokens.shape[0]} images of {side}x{side} patches."
            )
        b, n, _ = tokens.shape
        x = self.norm(tokens)
        q, k, v = (proj(x).view(b, n, self.heads, -1).transpose(1, 2) for proj in (self.to_q, self.to_k, self.to_v))
        bias = (self.mask_bias * (2.0 * mask_grid.reshape(b, 1, 1, n) - 1.0)).to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = self.to_out(out.transpose(1, 2).reshape(b, n, -1))
        return out.transpose(1, 2).reshape(b, -1, side, side)

    def forward(
        self,
        tokens: torch.Tensor,
        mask_grid: torch.Tensor,
        latent: torch.Tensor,
        latent_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The hint: ``base + to_latent(upsample(attend(tokens, mask)))``, shaped like ``latent``.

        ``base`` is ``latent``, or ``latent * latent_mask`` for ``hint_region`` ``subject``
        (``latent_mask``: ``[B, h, w]``, the subject mask at the latent's size, see
        :func:`mask_to_latent`).
        """
        if latent.shape[0] != tokens.shape[0]:
            raise P3SInputError(
                f"{tokens.shape[0]} reference images gave CLIP tokens but {latent.shape[0]} latents; "
                "pass the same images to both."
            )
        if self.config["hint_region"] == "subject":
            if latent_mask is None or tuple(latent_mask.shape) != (latent.shape[0], *latent.shape[-2:]):
                got = None if latent_mask is None else tuple(latent_mask.shape)
                raise P3SInputError(
                    f"This P3S model's hint shows the subject only: it needs the subject mask at the latent's "
                    f"size {(latent.shape[0], *latent.shape[-2:])}, got {got}."
                )
            latent = latent * latent_mask.unsqueeze(1).to(latent)
        feats = self.attend(tokens, mask_grid)
        feats = F.interpolate(feats, size=latent.shape[-2:], mode="bilinear", align_corners=False)
        return latent + self.to_latent(feats).to(latent.dtype)


def mask_to_latent(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Area-average a ``[B, H, W]`` mask in [0, 1] to the latent's ``(h, w)`` (no letterbox)."""
    if mask.dim() != 3:
        raise P3SInputError(f"The subject mask must be [batch, height, width]; got shape {tuple(mask.shape)}.")
    return F.adaptive_avg_pool2d(mask.float().unsqueeze(1), size).squeeze(1).clamp(0.0, 1.0)
