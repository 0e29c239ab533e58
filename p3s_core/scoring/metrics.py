"""The metric maths on embeddings: cosines, the mean over references, the mean and variance over images.

DreamBench [stated in DreamBooth, Ruiz et al. 2023]: CLIP-I and DINO are the mean cosine similarity of
generated and real images' embeddings, over all pairs; CLIP-T is the cosine of a generated image's
and its prompt's CLIP embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import P3SInputError
from ..prompt_words import without_word


def _unit(embeddings: torch.Tensor) -> torch.Tensor:
    embeddings = embeddings.double()
    norms = embeddings.norm(dim=-1, keepdim=True)
    if bool((norms == 0).any()):
        raise P3SInputError("An embedding is all zeros: its cosine is undefined (is the model loaded?).")
    return embeddings / norms


def image_image_scores(generated: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Per generated image, the mean cosine with every reference: ``[N, D]``, ``[R, D]`` -> ``[N]``."""
    if generated.ndim != 2 or references.ndim != 2 or generated.shape[1] != references.shape[1]:
        raise P3SInputError(
            f"Embeddings {tuple(generated.shape)} and {tuple(references.shape)} do not compare: "
            "both must be [count, width] from the same model."
        )
    return (_unit(generated) @ _unit(references).T).mean(dim=1)


def image_text_scores(images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    """Per image, the cosine with its own text: ``[N, D]``, ``[N, D]`` -> ``[N]``."""
    if images.shape != texts.shape or images.ndim != 2:
        raise P3SInputError(
            f"Image embeddings {tuple(images.shape)} and text embeddings {tuple(texts.shape)} must pair up one to one."
        )
    return (_unit(images) * _unit(texts)).sum(dim=1)


@dataclass(frozen=True)
class Summary:
    """Mean and population variance of per-image scores (the paper's CLIP-Iv / DINO-v are variances)."""

    mean: float
    variance: float


def summarise(scores: torch.Tensor) -> Summary:
    """The mean and the population variance (divided by N) of ``scores``."""
    values = scores.double()
    return Summary(float(values.mean()), float(values.var(correction=0)))


def prompts_per_image(prompts: Sequence[str], images: int) -> list[str]:
    """The prompt of each of ``images`` images from 1 prompt (all), one each, or k prompts for k equal
    consecutive groups (DreamBench's 25 prompts x 4 images: images 0-3 have prompt 0, ...)."""
    prompts = [p.strip() for p in prompts if p.strip()]
    if not prompts:
        raise P3SInputError("prompts is empty: give the prompt(s) the images were generated with, one per line.")
    if images % len(prompts):
        raise P3SInputError(
            f"{len(prompts)} prompts for {images} images: give 1 prompt, one per image, or a number of prompts "
            f"that divides {images} (consecutive images share a prompt: 25 prompts x 4 images = 100)."
        )
    repeat = images // len(prompts)
    return [prompt for prompt in prompts for _ in range(repeat)]


def clip_t_prompt(prompt: str, identifier: str) -> str:
    """The prompt CLIP-T compares with: the identifier word removed (``"a sks dog"`` -> ``"a dog"``), as
    DreamBench scores prompt fidelity without the rare token that means nothing to CLIP."""
    return without_word(prompt, identifier)


def check_finite(name: str, scores: torch.Tensor) -> torch.Tensor:
    """``scores`` when every value is finite; a NaN means a broken model or image, not a low score."""
    if not bool(torch.isfinite(scores).all()):
        raise P3SInputError(f"{name} is not finite for some image: the model file or the images hold NaN.")
    return scores
