"""The reference images and captions P3S Fine-tune trains on, before anything is encoded (our addition)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import P3SInputError
from ..validation import MAX_PROMPT_CHARS, MAX_WORDS_CHARS, text_length


def resize_references(images: torch.Tensor, mask: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[R, H, W, C]`` images and ``[R, H, W]`` masks with the longer side at ``resolution``, both
    sides multiples of 8 (aspect kept), values in [0, 1]."""
    h, w = images.shape[1:3]
    factor = resolution / max(h, w)
    size = (max(8, round(h * factor / 8) * 8), max(8, round(w * factor / 8) * 8))
    pixels = F.interpolate(images.movedim(-1, 1), size=size, mode="bilinear", align_corners=False, antialias=True)
    mask = F.interpolate(mask.unsqueeze(1).float(), size=size, mode="bilinear", align_corners=False)
    return pixels.movedim(1, -1).clamp(0, 1), mask.squeeze(1).clamp(0, 1)


def captions_per_image(instance_prompt: str, captions: str, images: int) -> list[str]:
    """One caption per reference image: the non-empty lines of ``captions``, or the instance prompt for all."""
    lines = [line.strip() for line in captions.splitlines() if line.strip()]
    if not lines:
        return [instance_prompt] * images
    if len(lines) != images:
        raise P3SInputError(
            f"{len(lines)} captions for {images} reference images: give one caption per line for each image "
            "(in order), or leave captions empty to use the instance prompt."
        )
    return lines


def reference_texts(instance_prompt: str, captions: str, attention_word: str, images: int) -> list[str]:
    """The caption of each of ``images`` reference images, after checking the lengths of the three texts."""
    text_length("instance_prompt", instance_prompt, MAX_PROMPT_CHARS)
    text_length("captions", captions, MAX_PROMPT_CHARS)
    text_length("attention_word", attention_word, MAX_WORDS_CHARS)
    return captions_per_image(instance_prompt, captions, images)
