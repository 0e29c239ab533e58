"""Write example_workflows/ from API prompts, through the real frontend.

Each example is loaded into ComfyUI's own frontend (headless chromium, ``app.loadApiJson``),
laid out, and saved as the frontend saves it (``app.graph.serialize()``), next to its API twin
(``app.graphToPrompt()``) under ``example_workflows/api/``. That folder is not listed by the
template browser, which loads only UI-format workflows.

Loader nodes carry ``properties.models`` (file name, official download URL, models folder), so the
frontend offers the download of a missing model; SaveImage nodes get titles from their file
prefixes. Then each example's thumbnail ``<name>.jpg`` is made from a real run of it on the
stand-in models (devtools/example_thumbnails.py).

Run: ``python -m devtools.export_examples`` (needs chromium and playwright, like the browser tests).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from devtools.comfy_host import REPO_ROOT, running_server
from devtools.model_files import CHECKPOINT, CLIP_VISION, SDXL_CHECKPOINT, download_entry
from devtools.sample_scene import twin_points_json
from devtools.workflows import selection_nodes

EXAMPLES_DIR = REPO_ROOT / "example_workflows"
API_DIR = EXAMPLES_DIR / "api"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
# The sample scene (devtools/sample_scene.py), shipped in example_workflows/input/ and named by file
# name alone, as ComfyUI's templates name their inputs (the pack copies it into ComfyUI's input folder).
EXAMPLE_IMAGE = "p3s_twins.png"
FINETUNE_SAVE_NAME = "p3s/my_subject.safetensors"  # what p3s_full_pipeline saves into models/p3s
P3S_MODEL = FINETUNE_SAVE_NAME  # what p3s_generate_with_model loads: the full pipeline's model
# The second subject of p3s_two_subjects: the other twin, trained with its own identifier.
SECOND_SAVE_NAME = "p3s/second_subject.safetensors"
SECOND_INSTANCE_PROMPT = "a photo of zwx toy"
# One prompt per subject, each on its own region's box (Conditioning (Set Mask), "mask bounds"),
# the negative on the same boxes: the way of writing them that kept both subjects in the toy world.
TWO_SUBJECTS_PROMPTS = ("a photo of sks toy on a beach", "a photo of zwx toy on a beach")
TWO_SUBJECTS_SIZE = (768, 512)  # width, height: two subjects side by side
REGION_FEATHER = 32
# Loader inputs whose file the frontend offers to download (properties.models of the node).
MODEL_WIDGETS = {"CheckpointLoaderSimple": "ckpt_name", "CLIPVisionLoader": "clip_name"}


def _selection_nodes() -> dict[str, Any]:
    """The selection of :func:`devtools.workflows.selection_nodes`, with the points widget showing the image."""
    prompt = selection_nodes(EXAMPLE_IMAGE, twin_points_json(), CLIP_VISION)
    prompt["2"]["inputs"]["image"] = ["1", 0]
    return prompt


def selection_example() -> dict[str, Any]:
    """Pick the subject: points -> RNGR mask -> inpaint the look-alike; save the cleaned image."""
    prompt = _selection_nodes()
    prompt.update(
        {
            "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "p3s/cleaned"}},
            "7": {"class_type": "MaskToImage", "inputs": {"mask": ["4", 0]}},
            "8": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
            "9": {"class_type": "PreviewImage", "inputs": {"images": ["4", 2]}},
        }
    )
    return prompt


PROMPT = "a photo of sks toy on a beach"
INSTANCE_PROMPT = "a photo of sks toy"
STEPS = 50  # the paper's inference: DDIM, 50 steps, CFG 7.5


def _sampling_nodes(model: list[Any], text: str, size: tuple[int, int], prefix: str) -> dict[str, Any]:
    """Nodes 14-19 of every generating example: the prompt and a fixed negative (CLIP of checkpoint
    "10"), an empty latent of ``size`` (width, height), KSampler (paper settings) on ``model``, VAE
    Decode and Save Image under ``prefix``."""
    clip, vae = ["10", 1], ["10", 2]
    return {
        "14": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": clip}},
        "15": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry, low quality", "clip": clip}},
        "16": {"class_type": "EmptyLatentImage", "inputs": {"width": size[0], "height": size[1], "batch_size": 1}},
        "17": {
            "class_type": "KSampler",
            "inputs": {
                "model": model,
                "positive": ["14", 0],
                "negative": ["15", 0],
                "latent_image": ["16", 0],
                "seed": 42,
                "control_after_generate": "fixed",
                "steps": STEPS,
                "cfg": 7.5,
                "sampler_name": "ddim",
                "scheduler": "ddim_uniform",
                "denoise": 1.0,
            },
        },
        "18": {"class_type": "VAEDecode", "inputs": {"samples": ["17", 0], "vae": vae}},
        "19": {"class_type": "SaveImage", "inputs": {"images": ["18", 0], "filename_prefix": prefix}},
    }


def _generation_nodes(p3s_model: list[Any]) -> dict[str, Any]:
    """SD1.5 checkpoint, P3S Schedule, P3S Apply of ``p3s_model`` on the cleaned selection, P3S Attention
    Maps around the sampler, KSampler (paper settings), VAE Decode, P3S Attention Overlays; saved images."""
    model, clip, vae = ["10", 0], ["10", 1], ["10", 2]
    nodes: dict[str, Any] = {
        "10": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "12": {
            "class_type": "P3SSchedule",
            "inputs": {
                "curve": "quadratic_up",
                "start_weight": 0.2,
                "end_weight": 1.0,
                "strength": 1.0,
                "start_percent": 0.0,
                "end_percent": 1.0,
                "steps": STEPS,
                "custom_points": "",
            },
        },
        "13": {
            "class_type": "P3SApply",
            "inputs": {
                "model": model,
                "p3s_model": p3s_model,
                "reference_images": ["5", 0],
                "subject_mask": ["4", 0],
                "vae": vae,
                "clip_vision": ["3", 0],
                "strength": 1.0,
                "schedule": ["12", 0],
                "start_percent": 0.0,
                "end_percent": 1.0,
                "apply_to_uncond": False,
                "reference_mode": "cycle",
            },
        },
        **_sampling_nodes(["20", 0], PROMPT, (512, 512), "p3s/generated"),
        "20": {
            "class_type": "P3SAttentionMaps",
            "inputs": {
                "model": ["13", 0],
                "clip": clip,
                "prompt": PROMPT,
                "words": "sks, toy",
                "layer": "output_11",
                "normalisation": "mean",
                "max_side": 64,
            },
        },
        "21": {
            "class_type": "P3SAttentionOverlays",
            "inputs": {"attention": ["20", 1], "images": ["18", 0], "steps": "all"},
        },
    }
    for node_id, output, name in (("23", 0, "frozen"), ("24", 1, "copy"), ("25", 2, "difference"), ("26", 3, "lac")):
        nodes[node_id] = {
            "class_type": "SaveImage",
            "inputs": {"images": ["21", output], "filename_prefix": f"p3s/attention_{name}"},
        }
    return nodes


def generation_example() -> dict[str, Any]:
    """The selection part feeding P3S Apply with a trained P3S model; DDIM 50 steps, CFG 7.5 as in the paper,
    with the frozen U-Net's and the copy's attention maps of the run."""
    prompt = _selection_nodes()
    prompt["11"] = {"class_type": "P3SLoader", "inputs": {"model_name": P3S_MODEL}}
    prompt.update(_generation_nodes(["11", 0]))
    return prompt


def second_points_json() -> str:
    """The twin points the other way round: positive on the right twin, negative on the left one."""
    points = json.loads(twin_points_json())
    for image in points["images"]:
        image["positive"], image["negative"] = image["negative"], image["positive"]
    return json.dumps(points)


def two_subjects_example() -> dict[str, Any]:
    """Two subjects in one image: the selection twice (the left twin, then the right one), two P3S
    Loaders, the left and right halves as regions (Solid Mask + Mask Composite, Invert Mask), two
    chained P3S Apply nodes, one prompt per subject and the negative, each put on its region's box
    with Conditioning (Set Mask) "mask bounds" and joined with Conditioning Combine, KSampler, VAE
    Decode."""
    prompt = _selection_nodes()
    model, vae = ["10", 0], ["10", 2]
    width, height = TWO_SUBJECTS_SIZE
    apply_settings = {
        "strength": 1.0,
        "start_percent": 0.0,
        "end_percent": 1.0,
        "apply_to_uncond": False,
        "reference_mode": "cycle",
        "region_feather": REGION_FEATHER,
    }
    prompt.update(
        {
            "30": {"class_type": "P3SPoints", "inputs": {"points": second_points_json(), "image": ["1", 0]}},
            "31": {**prompt["4"], "inputs": {**prompt["4"]["inputs"], "points": ["30", 0]}},
            "32": {**prompt["5"], "inputs": {**prompt["5"]["inputs"], "mask": ["31", 1]}},
            "10": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
            "11": {"class_type": "P3SLoader", "inputs": {"model_name": P3S_MODEL}},
            "33": {"class_type": "P3SLoader", "inputs": {"model_name": SECOND_SAVE_NAME}},
            "34": {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": width, "height": height}},
            "35": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": width // 2, "height": height}},
            "36": {
                "class_type": "MaskComposite",
                "inputs": {"destination": ["34", 0], "source": ["35", 0], "x": 0, "y": 0, "operation": "add"},
            },
            "37": {"class_type": "InvertMask", "inputs": {"mask": ["36", 0]}},
            "13": {
                "class_type": "P3SApply",
                "inputs": {
                    "model": model,
                    "p3s_model": ["11", 0],
                    "reference_images": ["5", 0],
                    "subject_mask": ["4", 0],
                    "vae": vae,
                    "clip_vision": ["3", 0],
                    "region": ["36", 0],
                    **apply_settings,
                },
            },
            "38": {
                "class_type": "P3SApply",
                "inputs": {
                    "model": ["13", 0],
                    "p3s_model": ["33", 0],
                    "reference_images": ["32", 0],
                    "subject_mask": ["31", 0],
                    "vae": vae,
                    "clip_vision": ["3", 0],
                    "region": ["37", 0],
                    **apply_settings,
                },
            },
            **_sampling_nodes(["38", 0], TWO_SUBJECTS_PROMPTS[0], (width, height), "p3s/two_subjects"),
            "39": {"class_type": "MaskToImage", "inputs": {"mask": ["36", 0]}},
            "40": {"class_type": "PreviewImage", "inputs": {"images": ["39", 0]}},
            "50": {"class_type": "CLIPTextEncode", "inputs": {"text": TWO_SUBJECTS_PROMPTS[1], "clip": ["10", 1]}},
        }
    )
    prompt.update(_per_region(["14", 0], ["50", 0], "51"))
    prompt.update(_per_region(["15", 0], ["15", 0], "54"))
    prompt["17"]["inputs"].update(positive=["53", 0], negative=["56", 0])
    return prompt


def _per_region(left: list[Any], right: list[Any], first_id: str) -> dict[str, Any]:
    """Conditioning ``left`` on the left region's box and ``right`` on the right one's (Conditioning
    (Set Mask) "mask bounds": the sampler runs each on its box's crop), joined by Conditioning
    Combine: node ids ``first_id``, +1 and +2 (the combined one)."""
    ids = [str(int(first_id) + i) for i in range(3)]
    nodes = {
        node_id: {
            "class_type": "ConditioningSetMask",
            "inputs": {"conditioning": cond, "mask": [mask, 0], "strength": 1.0, "set_cond_area": "mask bounds"},
        }
        for node_id, cond, mask in ((ids[0], left, "36"), (ids[1], right, "37"))
    }
    nodes[ids[2]] = {
        "class_type": "ConditioningCombine",
        "inputs": {"conditioning_1": [ids[0], 0], "conditioning_2": [ids[1], 0]},
    }
    return nodes


def full_pipeline_example() -> dict[str, Any]:
    """Points -> RNGR mask -> inpaint -> P3S Fine-tune (the paper's settings) -> P3S Apply with a
    P3S Schedule -> KSampler -> VAE Decode, with attention maps; every stage's images saved."""
    prompt = selection_example()
    prompt["8"] = {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "p3s/subject_mask"}}
    prompt["9"] = {"class_type": "SaveImage", "inputs": {"images": ["4", 2], "filename_prefix": "p3s/heatmap"}}
    prompt["11"] = {
        "class_type": "P3SFineTune",
        "inputs": {
            "model": ["10", 0],
            "clip": ["10", 1],
            "vae": ["10", 2],
            "clip_vision": ["3", 0],
            "reference_images": ["5", 0],
            "subject_mask": ["4", 0],
            "instance_prompt": INSTANCE_PROMPT,
            "captions": "",
            "epochs": 60,
            "lr": 0.0,  # auto: the rate of the scope that runs (p3s_core.training.learning_rates)
            "gamma": 0.1,
            "dropout": 0.1,
            "resolution": 512,
            "batch_size": 1,
            "seed": 0,
            "control_after_generate": "fixed",  # same seed, same model: re-queueing must not retrain
            "precision": "auto",
            "scope": "auto",
            "gradient_checkpointing": False,
            "save_name": FINETUNE_SAVE_NAME,
            "overwrite": False,
        },
    }
    prompt["22"] = {"class_type": "SaveImage", "inputs": {"images": ["11", 1], "filename_prefix": "p3s/loss"}}
    prompt["27"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["11", 2], "filename_prefix": "p3s/training_attention"},
    }
    prompt.update(_generation_nodes(["11", 0]))
    return prompt


SDXL_SAVE_NAME = "p3s/my_subject_sdxl.safetensors"  # what p3s_sdxl_full_pipeline saves into models/p3s
SDXL_RESOLUTION = 1024  # SDXL's own training side (p3s_core.bases.sdxl.DEFAULT_RESOLUTION)
SDXL_ATTENTION_LAYER = "output_5"  # SDXL's last cross-attention block, the L_ac layer (p3s_core.bases.sdxl)


def sdxl_pipeline_example() -> dict[str, Any]:
    """The full pipeline on an SDXL base: the same graph as :func:`full_pipeline_example` with the SDXL
    1.0 checkpoint, training (with gradient checkpointing) and sampling at 1024 px, and the attention
    maps of SDXL's last cross-attention block. The CLIP vision model is the same ViT-L/14 (the
    Fine-tune help says why)."""
    prompt = full_pipeline_example()
    prompt["10"]["inputs"]["ckpt_name"] = SDXL_CHECKPOINT
    prompt["11"]["inputs"].update(resolution=SDXL_RESOLUTION, save_name=SDXL_SAVE_NAME, gradient_checkpointing=True)
    prompt["16"]["inputs"].update(width=SDXL_RESOLUTION, height=SDXL_RESOLUTION)
    prompt["20"]["inputs"]["layer"] = SDXL_ATTENTION_LAYER
    for node in prompt.values():
        if node["class_type"] == "SaveImage":
            node["inputs"]["filename_prefix"] = node["inputs"]["filename_prefix"].replace("p3s/", "p3s_sdxl/", 1)
    return prompt


# Top-left corner (pixels) of each node id, left to right along the data flow.
_SELECTION_LAYOUT = {"1": (0, 0), "2": (330, 0), "3": (330, 520), "4": (760, 0), "5": (1100, 0)}
_GENERATION_LAYOUT = {
    **{"10": (0, 640), "12": (330, 640), "14": (760, 640), "15": (760, 880), "16": (1200, 640)},
    **{"13": (1750, 0), "20": (2080, 0), "17": (2530, 0), "18": (2860, 0), "19": (2860, 120), "21": (3180, 0)},
    **{"23": (3520, 0), "24": (3520, 300), "25": (3520, 600), "26": (3520, 900)},
}
_SELECTION_SAVES_LAYOUT = {"6": (1440, 0), "7": (1100, 300), "8": (1440, 300), "9": (760, 300)}
LAYOUTS = {
    "p3s_select_subject": {**_SELECTION_LAYOUT, **_SELECTION_SAVES_LAYOUT},
    "p3s_generate_with_model": {**_SELECTION_LAYOUT, "11": (0, 800), **_GENERATION_LAYOUT},
    "p3s_full_pipeline": {
        **_SELECTION_LAYOUT,
        **_SELECTION_SAVES_LAYOUT,
        **{"11": (1200, 1000), "22": (1650, 1000), "27": (1650, 1320)},
        **_GENERATION_LAYOUT,
    },
    "p3s_two_subjects": {
        **_SELECTION_LAYOUT,
        **{"30": (330, 1100), "31": (760, 1100), "32": (1100, 1100)},
        **{"10": (0, 640), "11": (1450, 0), "33": (1450, 1100), "14": (330, 1450), "50": (330, 1700)},
        **{"15": (330, 1950), "51": (800, 1450), "52": (800, 1650), "53": (1200, 1550), "54": (800, 1950)},
        **{"55": (800, 2150), "56": (1200, 2050)},
        **{"34": (1450, 300), "35": (1450, 480), "36": (1450, 660), "37": (1450, 900), "39": (1800, 900)},
        **{"40": (2080, 900), "13": (1800, 0), "38": (2150, 0), "16": (2150, 640), "17": (2500, 0)},
        **{"18": (2850, 0), "19": (2850, 120)},
    },
}
LAYOUTS["p3s_sdxl_full_pipeline"] = LAYOUTS["p3s_full_pipeline"]
EXAMPLES = {
    "p3s_select_subject": selection_example,
    "p3s_generate_with_model": generation_example,
    "p3s_full_pipeline": full_pipeline_example,
    "p3s_two_subjects": two_subjects_example,
    "p3s_sdxl_full_pipeline": sdxl_pipeline_example,
}

_EXPORT_JS = """async ([prompt, layout, models, titles]) => {
    const missing = Object.values(prompt).map((n) => n.class_type).filter((t) => !LiteGraph.registered_node_types[t]);
    if (missing.length) return {missing};
    app.loadApiJson(prompt, "example");
    for (const [id, [x, y]] of Object.entries(layout)) {
        const node = app.graph.getNodeById(+id);
        if (node) node.pos = [x, y];
    }
    for (const [id, entries] of Object.entries(models)) app.graph.getNodeById(+id).properties.models = entries;
    for (const [id, title] of Object.entries(titles)) app.graph.getNodeById(+id).title = title;
    app.graph.setDirtyCanvas(true, true);
    // JSON.stringify as the frontend's Save does: it drops undefined fields (playwright would turn them into null).
    return {workflow: JSON.stringify(app.graph.serialize()), api: JSON.stringify((await app.graphToPrompt()).output)};
}"""


def model_downloads(prompt: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """``{node_id: [{name, url, directory}]}`` for the loader nodes of ``prompt``."""
    return {
        node_id: [download_entry(node["inputs"][MODEL_WIDGETS[node["class_type"]]])]
        for node_id, node in prompt.items()
        if node["class_type"] in MODEL_WIDGETS
    }


# Preview nodes of the selection, by what they show (MaskToImage "7" of the subject mask, the heat map).
PREVIEW_TITLES = {
    (("7", 0),): "Preview subject mask",
    (("4", 2),): "Preview heat map",
    (("39", 0),): "Preview left region",
}


# Titles that tell the two subjects' chains apart (p3s_two_subjects), by node id.
TWO_SUBJECTS_TITLES = {
    "2": "P3S Points: left twin (subject 1)",
    "30": "P3S Points: right twin (subject 2)",
    "11": "P3S Loader: subject 1 (sks)",
    "33": "P3S Loader: subject 2 (zwx)",
    "34": "Region canvas",
    "35": "Left half",
    "36": "Region: left half",
    "37": "Region: right half",
    "13": "P3S Apply: subject 1 in the left half",
    "38": "P3S Apply: subject 2 in the right half",
    "14": "Prompt: subject 1 (sks)",
    "50": "Prompt: subject 2 (zwx)",
    "15": "Negative prompt",
    "51": "Prompt 1 on the left region",
    "52": "Prompt 2 on the right region",
    "53": "Prompts joined",
    "54": "Negative on the left region",
    "55": "Negative on the right region",
    "56": "Negatives joined",
}
EXTRA_TITLES = {"p3s_two_subjects": TWO_SUBJECTS_TITLES}


def output_titles(prompt: dict[str, Any]) -> dict[str, str]:
    """A title per SaveImage node from its file prefix ("p3s/subject_mask" -> "Save subject mask") and per
    PreviewImage by what it shows, so each output is found by name (API clients look nodes up by
    ``_meta.title``)."""
    titles = {}
    for node_id, node in prompt.items():
        if node["class_type"] == "SaveImage":
            titles[node_id] = "Save " + node["inputs"]["filename_prefix"].rsplit("/", 1)[-1].replace("_", " ")
        elif node["class_type"] == "PreviewImage":
            title = PREVIEW_TITLES.get((tuple(node["inputs"]["images"]),))
            if title:
                titles[node_id] = title
    return titles


def export(names: list[str], out_dir: Path = EXAMPLES_DIR) -> list[Path]:
    """Build each example in the frontend and write ``<name>.json`` and ``api/<name>.api.json``."""
    from playwright.sync_api import sync_playwright

    written = []
    with tempfile.TemporaryDirectory() as base, running_server(Path(base)) as server, sync_playwright() as pw:
        settings = Path(base) / "user" / "default" / "comfy.settings.json"
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps({"Comfy.TutorialCompleted": True}))
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(server.url)
            page.wait_for_function("() => window.app?.graph && window.LiteGraph", timeout=90_000)
            for name in names:
                prompt = EXAMPLES[name]()
                titles = {**output_titles(prompt), **EXTRA_TITLES.get(name, {})}
                result = page.evaluate(_EXPORT_JS, [prompt, LAYOUTS[name], model_downloads(prompt), titles])
                if result.get("missing"):
                    raise RuntimeError(f"{name}: the frontend does not know {result['missing']}")
                (out_dir / "api").mkdir(parents=True, exist_ok=True)
                for path, data in (
                    (out_dir / f"{name}.json", json.loads(result["workflow"])),
                    (out_dir / "api" / f"{name}.api.json", json.loads(result["api"])),
                ):
                    path.write_text(json.dumps(data, indent=2) + "\n")
                    written.append(path)
        finally:
            browser.close()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.export_examples", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"examples to write (default: all of {', '.join(EXAMPLES)})")
    parser.add_argument(
        "--no-thumbnails", action="store_true", help="skip the thumbnails (a real run of each example on stand-ins)"
    )
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(EXAMPLES)
    if unknown:
        parser.error(f"unknown example(s) {sorted(unknown)}; choose from {list(EXAMPLES)}")
    names = args.names or list(EXAMPLES)
    for path in export(names):
        print(path.relative_to(REPO_ROOT))
    if not args.no_thumbnails:
        from devtools.example_thumbnails import make_thumbnails

        for path in make_thumbnails(names):
            print(path.relative_to(REPO_ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
