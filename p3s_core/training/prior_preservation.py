"""Prior preservation's class images and prompt (our addition, DreamBooth's; not in the paper).

With ``prior_loss_weight`` above 0, P3S Fine-tune also denoises class images (the base's own
pictures of the subject's class, or images the user gives) under a class prompt, so that
training on a few references does not make every "dog" the user's dog. This module holds
what needs no ComfyUI: the checks, the class prompt and the :class:`TrainingData` with the
class images added; the node generates or encodes the images (``nodes/class_images.py``).
The loss itself is in :mod:`.loop`.
"""

from __future__ import annotations

import dataclasses

import torch

from ..errors import P3SInputError
from ..prompt_words import has_word, without_word
from ..validation import MAX_PROMPT_CHARS, text_length
from .settings import MAX_PRIOR_LOSS_WEIGHT, TrainingData

DEFAULT_CLASS_IMAGES = 8  # [our addition] DreamBooth uses hundreds; a few keep Fine-tune's start short
MAX_CLASS_IMAGES = 64
CLASS_SAMPLE_STEPS = 20  # [our addition] Euler steps of the base per generated class image
CLASS_SAMPLE_CFG = 7.5


def class_prompt_for(instance_prompt: str, identifier: str, class_prompt: str = "") -> str:
    """``class_prompt`` if given, else the instance prompt without its identifier word.

    ``"a photo of sks dog"`` with identifier ``sks`` gives ``"a photo of dog"``. An identifier that
    is not a word of the prompt cannot be removed: the user is asked for a class prompt.
    """
    text_length("class_prompt", class_prompt, MAX_PROMPT_CHARS)
    if class_prompt.strip():
        return class_prompt.strip()
    word = identifier.strip()
    if not has_word(instance_prompt, word):
        raise P3SInputError(
            f"Prior preservation needs a class prompt: the identifier {word!r} is not a word of the instance "
            f"prompt {instance_prompt!r}, so it cannot be removed to make one. Give class_prompt (e.g. "
            "'a photo of dog'), or set attention_word to the prompt's identifier."
        )
    return without_word(instance_prompt, word)


def check_prior_choice(weight: float, class_count: int, given: torch.Tensor | None) -> bool:
    """Whether prior preservation is on; refuses a weight or count out of range before any work."""
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight <= MAX_PRIOR_LOSS_WEIGHT:
        raise P3SInputError(
            f"prior_loss_weight is {weight!r}: give 0 (off) or a weight up to {MAX_PRIOR_LOSS_WEIGHT:g} "
            "(DreamBooth uses 1)."
        )
    if weight == 0:
        return False
    if given is None and not 1 <= int(class_count) <= MAX_CLASS_IMAGES:
        raise P3SInputError(
            f"class_image_count is {class_count}: generate 1 to {MAX_CLASS_IMAGES} class images, or connect "
            "class_images."
        )
    if given is not None and (given.ndim != 4 or given.shape[0] < 1):
        raise P3SInputError("class_images must be an IMAGE batch of at least one image, or leave it unconnected.")
    return True


def with_class_images(
    data: TrainingData, latents: torch.Tensor, context: torch.Tensor, y: torch.Tensor | None = None
) -> TrainingData:
    """``data`` with class latents ``[P, 4, h, w]`` (model space) and the class prompt's ``[1, T, C]``
    context (at the captions' token length) for each, and its ``[1, A]`` ADM input ``y`` where the
    base has one; :class:`TrainingData` checks the shapes."""
    count = latents.shape[0]
    prior_ys = None if y is None else y.expand(count, -1)
    return dataclasses.replace(
        data, prior_latents=latents, prior_contexts=context.expand(count, -1, -1), prior_ys=prior_ys
    )
