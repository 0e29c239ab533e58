"""API-format workflows the tests and the demo queue."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from p3s_batch.prompt_graph import needed_nodes
from p3s_core.model.shared_copy import DEFAULT_LORA_ALPHA, DEFAULT_LORA_RANK

EXAMPLES_API = Path(__file__).resolve().parent.parent / "example_workflows" / "api"
FULL_PIPELINE_API = EXAMPLES_API / "p3s_full_pipeline.api.json"
# The smallest settings that still run every stage: CPU demo and host test.
SMALL_PIPELINE: dict[str, Any] = {"epochs": 2, "resolution": 64, "scope": "injection", "size": 64, "steps": 3}
# Which node inputs each of those settings is: (class_type, input names).
SETTING_INPUTS: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "epochs": [("P3SFineTune", ("epochs",))],
    "resolution": [("P3SFineTune", ("resolution",))],
    "scope": [("P3SFineTune", ("scope",))],
    "size": [("EmptyLatentImage", ("width", "height"))],
    "steps": [("KSampler", ("steps",)), ("P3SSchedule", ("steps",))],
}


def example_api(name: str) -> dict[str, Any]:
    """The API twin of example ``name`` as shipped (``example_workflows/api/<name>.api.json``)."""
    return json.loads((EXAMPLES_API / f"{name}.api.json").read_text())


def with_settings(prompt: dict[str, Any], **settings: Any) -> dict[str, Any]:
    """``prompt`` with only the CPU-cost settings of :data:`SETTING_INPUTS` changed (``None`` keeps a
    value), in whichever of their nodes it has; changed in place and returned."""
    unknown = set(settings) - set(SETTING_INPUTS)
    if unknown:
        raise KeyError(f"not a setting: {sorted(unknown)}; choose from {sorted(SETTING_INPUTS)}")
    for setting, value in settings.items():
        if value is None:
            continue
        for class_type, names in SETTING_INPUTS[setting]:
            for node in prompt.values():
                if node["class_type"] == class_type:
                    node["inputs"].update(dict.fromkeys(names, value))
    return prompt


def training_only(prompt: dict[str, Any]) -> dict[str, Any]:
    """The part of ``prompt`` that trains: every P3S Fine-tune with what it needs, and the Save Image
    nodes of its own outputs (the loss plot), so that ComfyUI runs it without the sampling after it."""
    trainers = [i for i, node in prompt.items() if node["class_type"] == "P3SFineTune"]
    if not trainers:
        raise ValueError("the prompt has no P3SFineTune node")
    savers = [
        i
        for i, node in prompt.items()
        if node["class_type"] == "SaveImage" and prompt[node["inputs"]["images"][0]]["class_type"] == "P3SFineTune"
    ]
    return needed_nodes(prompt, trainers + savers)


def selection_workflow(
    image: str,
    points_json: str,
    clip_vision: str,
    prefix: str = "p3s_select",
    inpaint_method: str = "telea",
    batch: int = 1,
) -> dict[str, Any]:
    """LoadImage -> P3S Points -> P3S RNGR Mask -> P3S Inpaint -> SaveImage (masks saved too).

    With ``batch`` > 1 the image is repeated into a batch (RepeatImageBatch) to exercise point
    sets per image.
    """
    prompt = selection_nodes(image, points_json, clip_vision, inpaint_method, batch)
    prompt.update(
        {
            "6": {
                "class_type": "SaveImage",
                "inputs": {"images": ["5", 0], "filename_prefix": f"{prefix}_clean"},
            },
            "7": {"class_type": "MaskToImage", "inputs": {"mask": ["4", 0]}},
            "8": {
                "class_type": "SaveImage",
                "inputs": {"images": ["7", 0], "filename_prefix": f"{prefix}_subject"},
            },
            "10": {"class_type": "MaskToImage", "inputs": {"mask": ["4", 1]}},
            "11": {
                "class_type": "SaveImage",
                "inputs": {"images": ["10", 0], "filename_prefix": f"{prefix}_negative"},
            },
            "12": {
                "class_type": "SaveImage",
                "inputs": {"images": ["4", 2], "filename_prefix": f"{prefix}_heatmap"},
            },
        }
    )
    return prompt


def selection_nodes(
    image: str, points_json: str, clip_vision: str, inpaint_method: str = "telea", batch: int = 1
) -> dict[str, Any]:
    """The selection without outputs: "1" LoadImage, "2" P3S Points, "3" CLIPVisionLoader,
    "4" P3S RNGR Mask (subject mask, negative mask, heat map), "5" P3S Inpaint (cleaned image),
    and "9" RepeatImageBatch when ``batch`` > 1."""
    image_ref: list[Any] = ["1", 0]
    prompt: dict[str, Any] = {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "P3SPoints", "inputs": {"points": points_json}},
        "3": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": clip_vision}},
    }
    if batch > 1:
        prompt["9"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": batch}}
        image_ref = ["9", 0]
    prompt.update(
        {
            "4": {
                "class_type": "P3SRngrMask",
                "inputs": {
                    "images": image_ref,
                    "points": ["2", 0],
                    "clip_vision": ["3", 0],
                    "layer": -2,
                    "sigma": 1.0,
                    "dilation": 8,
                    "gate_negatives": True,
                },
            },
            "5": {
                "class_type": "P3SInpaint",
                "inputs": {
                    "images": image_ref,
                    "mask": ["4", 1],
                    "method": inpaint_method,
                    "radius": 5,
                    "fill": 0.5,
                },
            },
        }
    )
    return prompt


def finetune_workflow(
    checkpoint: str,
    clip_vision: str,
    image: str,
    points_json: str,
    save_name: str,
    epochs: int = 1,
    resolution: int = 64,
    scope: str = "injection",
    seed: int = 0,
    prefix: str = "p3s_finetune",
) -> dict[str, Any]:
    """Checkpoint + the selection (LoadImage -> P3S Points -> P3S RNGR Mask -> P3S Inpaint) ->
    "21" P3S Fine-tune (one reference image; saves ``save_name`` into models/p3s) -> "22" SaveImage
    of the loss plot. The defaults are the lightest training: scope ``injection``, 64 px, 1 epoch."""
    prompt = selection_nodes(image, points_json, clip_vision)
    prompt["20"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}}
    prompt["21"] = {
        "class_type": "P3SFineTune",
        "inputs": {
            "model": ["20", 0],
            "clip": ["20", 1],
            "vae": ["20", 2],
            "clip_vision": ["3", 0],
            "reference_images": ["5", 0],
            "subject_mask": ["4", 0],
            "instance_prompt": "a photo of sks disc",
            "captions": "",
            "epochs": epochs,
            "lr": 0.0,  # auto: the rate of the scope that runs (p3s_core.training.learning_rates)
            "gamma": 0.1,
            "dropout": 0.1,
            "resolution": resolution,
            "batch_size": 1,
            "seed": seed,
            "precision": "auto",
            "scope": scope,
            "lora_rank": DEFAULT_LORA_RANK,
            "lora_alpha": DEFAULT_LORA_ALPHA,
            "gradient_checkpointing": False,
            "save_name": save_name,
            "overwrite": False,
            "save_every": 0,
        },
    }
    prompt["22"] = {"class_type": "SaveImage", "inputs": {"images": ["21", 1], "filename_prefix": f"{prefix}_loss"}}
    return prompt


def attention_workflow(
    checkpoint: str,
    clip_vision: str,
    reference: str,
    prompt: str = "a photo of sks dog",
    words: str = "sks, dog",
    steps: int = 2,
    size: int = 64,
    seed: int = 1,
    overlay_steps: str = "all",
    prefix: str = "p3s_attn",
) -> dict[str, Any]:
    """Checkpoint -> P3S Init -> P3S Apply -> P3S Attention Maps -> KSampler -> VAE Decode ->
    P3S Attention Overlays -> SaveImage (frozen, copy, difference overlays, L_ac plot, the image)."""
    model, clip, vae = ["1", 0], ["1", 1], ["1", 2]
    save = {
        "20": (["13", 0], "frozen"),
        "21": (["13", 1], "copy"),
        "22": (["13", 2], "difference"),
        "23": (["13", 3], "lac"),
        "24": (["12", 0], "image"),
    }
    workflow: dict[str, Any] = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": clip}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": clip}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "5": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": clip_vision}},
        "6": {"class_type": "P3SInit", "inputs": {"model": model, "clip_vision": ["5", 0]}},
        "7": {"class_type": "LoadImage", "inputs": {"image": reference}},
        "8": {"class_type": "ImageToMask", "inputs": {"image": ["7", 0], "channel": "red"}},
        "9": {
            "class_type": "P3SApply",
            "inputs": {
                "model": model,
                "p3s_model": ["6", 0],
                "reference_images": ["7", 0],
                "subject_mask": ["8", 0],
                "vae": vae,
                "clip_vision": ["5", 0],
                "strength": 1.0,
                "start_percent": 0.0,
                "end_percent": 1.0,
                "apply_to_uncond": False,
                "reference_mode": "cycle",
            },
        },
        "10": {
            "class_type": "P3SAttentionMaps",
            "inputs": {
                "model": ["9", 0],
                "clip": clip,
                "prompt": prompt,
                "words": words,
                "layer": "output_11",
                "normalisation": "mean",
                "max_side": 64,
            },
        },
        "11": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["10", 0],
                "seed": seed,
                "steps": steps,
                "cfg": 4.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "positive": ["2", 0],
                "negative": ["3", 0],
                "latent_image": ["4", 0],
                "denoise": 1.0,
            },
        },
        "12": {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": vae}},
        "13": {
            "class_type": "P3SAttentionOverlays",
            "inputs": {"attention": ["10", 1], "images": ["12", 0], "steps": overlay_steps},
        },
    }
    for node, (source, name) in save.items():
        workflow[node] = {
            "class_type": "SaveImage",
            "inputs": {"images": source, "filename_prefix": f"{prefix}_{name}"},
        }
    return workflow


def full_pipeline_workflow(
    image: str,
    clip_vision: str,
    checkpoint: str,
    *,
    points_json: str | None = None,
    epochs: int | None = None,
    resolution: int | None = None,
    scope: str | None = None,
    save_name: str | None = None,
    overwrite: bool | None = None,
    size: int | None = None,
    steps: int | None = None,
    seed: int | None = None,
    prefix: str | None = None,
) -> dict[str, Any]:
    """The example ``p3s_full_pipeline`` (its exported API twin) with file names and settings overridden.

    Points -> RNGR mask -> inpaint -> P3S Fine-tune -> P3S Apply + Schedule -> P3S Attention Maps ->
    KSampler -> VAE Decode -> P3S Attention Overlays; SaveImage at every stage. ``None`` keeps the
    example's value. ``size`` is the sampled image's side, ``steps`` the sampler's (and the schedule
    plot's) step count, ``prefix`` replaces the ``p3s/`` folder of every SaveImage.
    """
    prompt = example_api("p3s_full_pipeline")

    def set_inputs(class_type: str, **values: Any) -> None:
        nodes = [node for node in prompt.values() if node["class_type"] == class_type]
        if not nodes:
            raise KeyError(f"the full pipeline example has no {class_type} node")
        for node in nodes:
            node["inputs"].update({k: v for k, v in values.items() if v is not None})

    set_inputs("LoadImage", image=image)
    set_inputs("CLIPVisionLoader", clip_name=clip_vision)
    set_inputs("CheckpointLoaderSimple", ckpt_name=checkpoint)
    set_inputs("P3SPoints", points=points_json)
    set_inputs("P3SFineTune", save_name=save_name, overwrite=overwrite)
    set_inputs("KSampler", seed=seed)
    with_settings(prompt, epochs=epochs, resolution=resolution, scope=scope, size=size, steps=steps)
    if prefix is not None:
        for node in prompt.values():
            if node["class_type"] == "SaveImage":
                name = node["inputs"]["filename_prefix"]
                node["inputs"]["filename_prefix"] = f"{prefix}/{name.split('/', 1)[-1]}"
    return prompt
