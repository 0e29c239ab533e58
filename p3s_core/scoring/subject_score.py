"""Score generated images of a subject against its references: CLIP-I, CLIP-T and DINO per image and
their mean and variance, the one function the node and a batch run call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..errors import P3SInputError
from .backbones import ClipBackbone, DinoBackbone
from .metrics import (
    Summary,
    check_finite,
    clip_t_prompt,
    image_image_scores,
    image_text_scores,
    prompts_per_image,
    summarise,
)
from .preprocess import masked_reference, preprocess_images
from .protocol import CLIP_PREPROCESS, DINO_PREPROCESS

EMBED_BATCH = 32
"""Images embedded per forward pass (bounds the memory of a 100-image DreamBench set)."""
MAX_IMAGES = 4096


@dataclass(frozen=True)
class ScoreInputs:
    """Checked inputs: one prompt per generated image and the references to compare with."""

    images: list[torch.Tensor]
    references: list[torch.Tensor]
    prompts: list[str]
    clip_t_prompts: list[str]
    masked: bool


ImageSet = torch.Tensor | Sequence[torch.Tensor]
"""A ComfyUI IMAGE batch ``[B, H, W, C]``, or a list of ``[H, W, C]`` images of any sizes (a batch run's files)."""


def _image_list(name: str, batch: ImageSet) -> list[torch.Tensor]:
    items = list(batch) if isinstance(batch, torch.Tensor) and batch.ndim == 4 else None
    if items is None and not isinstance(batch, torch.Tensor) and isinstance(batch, Sequence):
        items = list(batch)
    if not items or not all(isinstance(i, torch.Tensor) and i.ndim == 3 and i.shape[-1] in (1, 3, 4) for i in items):
        raise P3SInputError(
            f"{name} must be an IMAGE batch [count, height, width, channels] (or a list of [height, width, "
            "channels] images) of at least one image."
        )
    if len(items) > MAX_IMAGES:
        raise P3SInputError(f"Score at most {MAX_IMAGES} images at once (DreamBench needs 100 per subject).")
    return items


def _mask_list(masks: torch.Tensor | Sequence[torch.Tensor], references: list[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(masks, torch.Tensor):
        masks = list(masks if masks.ndim == 3 else masks.reshape(-1, *masks.shape[-2:]))
    masks = list(masks)
    if len(masks) not in (1, len(references)):
        raise P3SInputError(
            f"{len(masks)} reference masks for {len(references)} references: give one mask per reference "
            "(P3S RNGR Mask's subject_mask), or one for all."
        )
    masks = masks * len(references) if len(masks) == 1 else masks
    for mask, reference in zip(masks, references, strict=True):
        if tuple(mask.shape[-2:]) != tuple(reference.shape[:2]):
            raise P3SInputError(
                f"A reference mask is {mask.shape[-1]} x {mask.shape[-2]} px, its reference "
                f"{reference.shape[1]} x {reference.shape[0]}: make the masks from these very references."
            )
    return masks


def check_score_inputs(
    images: ImageSet,
    references: ImageSet,
    prompts: Sequence[str],
    identifier: str = "sks",
    reference_masks: torch.Tensor | Sequence[torch.Tensor] | None = None,
) -> ScoreInputs:
    """Every check, before any model is loaded; masked references are cut here (our addition)."""
    generated = _image_list("images", images)
    refs = _image_list("references", references)
    per_image = prompts_per_image(prompts, len(generated))
    if reference_masks is not None:
        masks = _mask_list(reference_masks, refs)
        refs = [masked_reference(ref, mask) for ref, mask in zip(refs, masks, strict=True)]
    return ScoreInputs(
        generated, refs, per_image, [clip_t_prompt(p, identifier) for p in per_image], reference_masks is not None
    )


def _embed(images: Sequence[torch.Tensor], spec, embed) -> torch.Tensor:
    chunks = []
    for start in range(0, len(images), EMBED_BATCH):
        chunks.append(embed(preprocess_images(images[start : start + EMBED_BATCH], spec)))
    return torch.cat(chunks)


@dataclass(frozen=True)
class SubjectScores:
    """Per-image scores (``[N]`` float64) and what they were computed with."""

    clip_i: torch.Tensor
    clip_t: torch.Tensor
    dino: torch.Tensor
    prompts: list[str]
    references: int
    masked: bool
    clip_label: str
    dino_label: str
    protocol: bool
    extra_clip_i: torch.Tensor | None = None
    extra_label: str = ""
    summaries: dict[str, Summary] = field(init=False)

    def __post_init__(self) -> None:
        summaries = {"clip_i": summarise(self.clip_i), "clip_t": summarise(self.clip_t), "dino": summarise(self.dino)}
        if self.extra_clip_i is not None:
            summaries["extra_clip_i"] = summarise(self.extra_clip_i)
        object.__setattr__(self, "summaries", summaries)

    def mean(self, metric: str) -> float:
        """The mean of ``metric`` (``clip_i``, ``clip_t``, ``dino``, ``extra_clip_i``); NaN when not computed."""
        return self.summaries[metric].mean if metric in self.summaries else float("nan")

    def rows(self) -> list[dict[str, object]]:
        """One dict per generated image (index, CLIP-T prompt, scores): a CSV's rows."""
        rows = []
        for i, prompt in enumerate(self.prompts):
            row: dict[str, object] = {
                "image": i,
                "prompt": prompt,
                "clip_i": float(self.clip_i[i]),
                "clip_t": float(self.clip_t[i]),
                "dino": float(self.dino[i]),
            }
            if self.extra_clip_i is not None:
                row["extra_clip_i"] = float(self.extra_clip_i[i])
            rows.append(row)
        return rows


def score_subject(
    images: ImageSet,
    references: ImageSet,
    prompts: Sequence[str],
    clip: ClipBackbone,
    dino: DinoBackbone,
    identifier: str = "sks",
    reference_masks: torch.Tensor | Sequence[torch.Tensor] | None = None,
    extra_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
    extra_label: str = "",
) -> SubjectScores:
    """DreamBench's scores of ``images`` (``[N, H, W, C]`` in [0, 1], or a list of ``[H, W, C]``) against
    ``references`` (likewise; sizes may differ in a list).

    ``prompts``: 1, N, or k prompts for k consecutive groups of images; ``identifier`` is removed from
    them for CLIP-T. ``reference_masks`` (``[R, H, W]``, our addition): score the subject alone, grey
    outside its mask. ``extra_embeddings``: (generated, references) image embeddings of another model
    (ComfyUI's CLIP vision) for an extra CLIP-I, labelled ``extra_label``; not the protocol's.
    """
    checked = check_score_inputs(images, references, prompts, identifier, reference_masks)
    generated = checked.images
    clip_generated = _embed(generated, CLIP_PREPROCESS, clip.embed_images)
    clip_references = _embed(checked.references, CLIP_PREPROCESS, clip.embed_images)
    texts = torch.cat(
        [clip.embed_texts(checked.clip_t_prompts[s : s + EMBED_BATCH]) for s in range(0, len(generated), EMBED_BATCH)]
    )
    dino_generated = _embed(generated, DINO_PREPROCESS, dino.embed_images)
    dino_references = _embed(checked.references, DINO_PREPROCESS, dino.embed_images)
    extra = None
    if extra_embeddings is not None:
        extra_generated, extra_references = extra_embeddings
        if extra_generated.shape[0] != len(generated) or extra_references.shape[0] != len(checked.references):
            raise P3SInputError("The extra CLIP embeddings must be one per generated image and one per reference.")
        extra = check_finite("CLIP-I (extra)", image_image_scores(extra_generated, extra_references))
    return SubjectScores(
        clip_i=check_finite("CLIP-I", image_image_scores(clip_generated, clip_references)),
        clip_t=check_finite("CLIP-T", image_text_scores(clip_generated, texts)),
        dino=check_finite("DINO", image_image_scores(dino_generated, dino_references)),
        prompts=checked.clip_t_prompts,
        references=len(checked.references),
        masked=checked.masked,
        clip_label=clip.label,
        dino_label=dino.label,
        protocol=clip.is_protocol and dino.is_protocol and not checked.masked,
        extra_clip_i=extra,
        extra_label=extra_label,
    )
