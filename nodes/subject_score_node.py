"""``P3S Subject Score``: DreamBench's CLIP-I, CLIP-T and DINO of generated images against references."""

from __future__ import annotations

import json
import os
from pathlib import Path

import comfy.model_management
import folder_paths
import torch
from comfy_api.latest import io, ui

from ..p3s_core.scoring.backbones import ClipBackbone, DinoBackbone, load_clip, load_dino, resolve_backbone_file
from ..p3s_core.scoring.protocol import CLIP_B32, DINO_S16, Backbone
from ..p3s_core.scoring.report import render_score_chart, score_table
from ..p3s_core.scoring.subject_score import check_score_inputs, score_subject
from ..p3s_core.validation import MAX_PROMPT_CHARS, MAX_WORDS_CHARS, text_length
from .model_folder import P3S_EVAL_FOLDER, register_eval_folder
from .types import CATEGORY_INSPECT

EXTRA_LABEL = "ComfyUI's CLIP vision (ViT-L/14 for SD1.5)"
# One loaded backbone of each kind, kept on the CPU between runs: key (path, mtime, size) -> model.
_LOADED: dict[str, tuple[tuple, ClipBackbone | DinoBackbone]] = {}


def model_options(backbone: Backbone) -> list[str]:
    """The folder's weight files, the protocol's file name first even when it is missing (so that a
    missing file reaches the node's own error, which says where to download it)."""
    listed = [name for name in folder_paths.get_filename_list(P3S_EVAL_FOLDER) if name != backbone.file_name]
    return [backbone.file_name, *listed]


def download_hints() -> list[dict[str, str]]:
    """``properties.models`` entries for the node's two files (the frontend offers the downloads)."""
    return [{"name": b.file_name, "url": b.url, "directory": P3S_EVAL_FOLDER} for b in (CLIP_B32, DINO_S16)]


def comfy_tokenizer_dir() -> Path:
    """ComfyUI's copy of OpenAI CLIP's BPE tokenizer (``comfy/sd1_tokenizer``)."""
    import comfy.sd1_clip

    return Path(os.path.dirname(comfy.sd1_clip.__file__)) / "sd1_tokenizer"


def _cached(kind: str, path: Path, load) -> ClipBackbone | DinoBackbone:
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    held = _LOADED.get(kind)
    if held is None or held[0] != key:
        _LOADED.pop(kind, None)  # drop the old one before loading the next
        _LOADED[kind] = (key, load(path))
    return _LOADED[kind][1]


def _comfy_clip_embeddings(clip_vision, images: list[torch.Tensor]) -> torch.Tensor:
    """Projected image embeddings of ComfyUI's CLIP vision model (its own resize and centre crop)."""
    return torch.cat([clip_vision.encode_image(image[None])["image_embeds"].float().cpu() for image in images])


class P3SSubjectScore(io.ComfyNode):
    """Scores a subject's generated images the way DreamBench does, with the protocol pinned."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        register_eval_folder()
        return io.Schema(
            node_id="P3SSubjectScore",
            display_name="P3S Subject Score",
            category=CATEGORY_INSPECT,
            description="DreamBench's subject scores: CLIP-I (generated vs reference images), CLIP-T (generated "
            "image vs prompt, identifier removed) with CLIP ViT-B/32, and DINO (ViT-S/16 CLS) per image, their "
            "mean and variance. Backbones from models/p3s_eval.",
            inputs=[
                io.Image.Input("images", tooltip="The generated images to score (a batch)."),
                io.Image.Input("references", tooltip="The real photos of the subject (3-5, as a batch)."),
                io.String.Input(
                    "prompts",
                    multiline=True,
                    default="a photo of sks dog",
                    tooltip="The prompt(s) the images were generated with, one per line: one for all, one per "
                    "image, or k prompts for k equal groups of consecutive images (25 prompts x 4 images).",
                ),
                io.String.Input(
                    "identifier",
                    default="sks",
                    tooltip="The subject's identifier word, removed from the prompts for CLIP-T (DreamBench). "
                    "Empty = keep the prompts as they are.",
                ),
                io.Combo.Input(
                    "clip_model",
                    options=model_options(CLIP_B32),
                    tooltip="CLIP ViT-B/32 weights in models/p3s_eval: clip-vit-base-patch32.safetensors, or "
                    "the Hugging Face folder openai/clip-vit-base-patch32 (its model.safetensors).",
                ),
                io.Combo.Input(
                    "dino_model",
                    options=model_options(DINO_S16),
                    tooltip="DINO ViT-S/16 weights in models/p3s_eval: dino-vits16.safetensors, or the Hugging "
                    "Face folder facebook/dino-vits16 (its model.safetensors).",
                ),
                io.Mask.Input(
                    "reference_masks",
                    optional=True,
                    tooltip="Optional subject masks of the references (P3S RNGR Mask): score the subject "
                    "alone, grey outside its mask (our addition, not DreamBench's protocol).",
                ),
                io.ClipVision.Input(
                    "clip_vision",
                    optional=True,
                    tooltip="Optional: ComfyUI's CLIP vision model (the ViT-L/14 of P3S RNGR Mask) for an "
                    "extra CLIP-I, clip_i_comfy. Not the protocol's backbone.",
                ),
            ],
            outputs=[
                io.Float.Output("clip_i", tooltip="Mean CLIP-I (ViT-B/32): image-image cosine, mean over references."),
                io.Float.Output("clip_t", tooltip="Mean CLIP-T (ViT-B/32): image-prompt cosine, identifier removed."),
                io.Float.Output("dino", tooltip="Mean DINO (ViT-S/16 CLS): image-image cosine, mean over references."),
                io.Float.Output(
                    "clip_i_comfy",
                    tooltip="Mean CLIP-I with ComfyUI's CLIP vision (ViT-L/14): NOT the protocol's backbone, "
                    "higher than ViT-B/32's; NaN when clip_vision is not connected.",
                ),
                io.String.Output("table", tooltip="Markdown table: every image's scores, the mean and variance."),
                io.String.Output("per_image", tooltip="Every image's scores as JSON (for a spreadsheet or a script)."),
                io.Image.Output("chart", tooltip="The means and a bar per metric under each image."),
            ],
        )

    @classmethod
    def execute(
        cls,
        images,
        references,
        prompts: str,
        identifier: str,
        clip_model: str,
        dino_model: str,
        reference_masks=None,
        clip_vision=None,
    ) -> io.NodeOutput:
        text_length("prompts", prompts, MAX_PROMPT_CHARS)
        text_length("identifier", identifier, MAX_WORDS_CHARS)
        prompt_lines = prompts.splitlines()
        checked = check_score_inputs(images, references, prompt_lines, identifier, reference_masks)
        folders = register_eval_folder()
        clip_path = resolve_backbone_file(folders, clip_model, CLIP_B32, "clip_model")
        dino_path = resolve_backbone_file(folders, dino_model, DINO_S16, "dino_model")
        clip = _cached("clip", clip_path, lambda p: load_clip(p, comfy_tokenizer_dir()))
        dino = _cached("dino", dino_path, load_dino)
        extra = None
        if clip_vision is not None:
            extra = (
                _comfy_clip_embeddings(clip_vision, list(images)),
                _comfy_clip_embeddings(clip_vision, checked.references),
            )
        device = comfy.model_management.get_torch_device()
        try:
            clip.to(device), dino.to(device)
            scores = score_subject(
                images, references, prompt_lines, clip, dino, identifier, reference_masks, extra, EXTRA_LABEL
            )
        finally:
            clip.to("cpu"), dino.to("cpu")
            comfy.model_management.soft_empty_cache()
        chart = torch.from_numpy(render_score_chart(images, scores))[None]
        return io.NodeOutput(
            scores.mean("clip_i"),
            scores.mean("clip_t"),
            scores.mean("dino"),
            scores.mean("extra_clip_i"),
            score_table(scores),
            json.dumps(scores.rows()),
            chart,
            ui=ui.PreviewImage(chart, cls=cls),
        )
