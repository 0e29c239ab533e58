"""``p3s-batch dreambench``: DreamBooth's benchmark (DreamBench) run through ComfyUI servers.

For each subject of a folder in the layout of the public DreamBooth dataset (``<subject>/*.jpg``
and the ``prompts_and_classes.txt`` that comes with it, read from the user's copy): the subject
is selected (points per subject from a JSON file, or the whole image), P3S Fine-tune trains a
P3S model on its photos, the protocol's prompts x images per prompt are generated, and the
images are scored with :mod:`p3s_core.scoring` (CLIP-I, CLIP-T, DINO). Training and generation
are p3s-batch runs (the same worker, scheduler and ledger, one ledger per subject and stage:
``OUT/<subject>/train`` and ``OUT/<subject>/generate``) of the pack's exported example workflows;
the scores of a subject are written once its images are all there (``OUT/<subject>/scores.*``),
then the overall tables (``OUT/dreambench.csv``, ``OUT/dreambench.md``). Rerunning the same
command skips what is done. Every file is written to a temporary name, then renamed.

Our additions (the paper states none of this): the references are centre-cropped to a square
(``--reference-size``) so that they make one batch; the image seeds follow
:func:`image_seed`; a subject without points is trained on its whole images (a full mask).
"""

from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import io
import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p3s_batch.items import BatchInputError, BatchItem, Override, load_workflow
from p3s_batch.ledger import Ledger, LedgerBusy
from p3s_batch.prompt_graph import needed_nodes

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_API = REPO_ROOT / "example_workflows" / "api"
TRAIN_EXAMPLE = "p3s_full_pipeline.api.json"
GENERATE_EXAMPLE = "p3s_generate_with_model.api.json"
PROMPTS_FILE = "prompts_and_classes.txt"
LIVE_CLASSES = frozenset({"dog", "cat"})
"""DreamBooth's live subjects (the dogs and cats) take the live-subject prompt list."""
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
IMAGES_PER_PROMPT = 4
SEED_STRIDE = 100
PAPER_TABLE_I = {"clip_i": 0.7748, "clip_t": 0.2383, "dino": 0.5491, "clip_i_var": 0.0045, "dino_var": 0.0187}
"""The P3S paper's Table I (full model): CLIP-I, CLIP-T, DINOv2 (another backbone than ours), CLIP-Iv, DINO-v."""
METRICS = ("clip_i", "clip_t", "dino")
VARIANCES = ("clip_i_var", "dino_var")
"""Table I's CLIP-Iv and DINO-v, read as the variance over the generated images (our reading)."""
SCORES_VERSION = "2"


class DreamBenchError(BatchInputError):
    """The dataset, the points or a flag cannot be used; nothing expensive has run."""


# -- the dataset ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchFile:
    """``prompts_and_classes.txt``: subject -> class, and the two prompt lists (``{0}`` identifier, ``{1}`` class)."""

    classes: dict[str, str]
    object_prompts: list[str]
    live_prompts: list[str]

    def prompts_for(self, class_name: str) -> list[str]:
        return self.live_prompts if class_name in LIVE_CLASSES else self.object_prompts


_QUOTED = re.compile(r"""(['"])(.*?)\1""")


def parse_prompts_and_classes(path: Path) -> BenchFile:
    """Read DreamBooth's ``prompts_and_classes.txt``: a ``subject_name,class`` table, then the
    ``Object Prompts`` and ``Live Subject Prompts`` lists of quoted templates (``'a {0} {1} ...'``)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise DreamBenchError(f"cannot read the prompts file {path}: {exc}") from None
    lines = text.splitlines()
    classes: dict[str, str] = {}
    sections: dict[str, list[str]] = {"object": [], "live": []}
    section = None
    for line in lines:
        stripped = line.strip()
        lowered = stripped.lower()
        if lowered.startswith("object prompts"):
            section = "object"
            continue
        if lowered.startswith("live subject prompts"):
            section = "live"
            continue
        if section is None:
            if lowered.replace(" ", "") == "subject_name,class" or "," not in stripped:
                continue
            name, _, class_name = (part.strip() for part in stripped.partition(","))
            if name and class_name:
                classes[name] = class_name
            continue
        for _, template in _QUOTED.findall(stripped):
            if "{0}" in template:
                sections[section].append(template)
    where = f"{path} (DreamBooth's dataset/{PROMPTS_FILE})"
    if not classes:
        raise DreamBenchError(f"{where}: no 'subject_name,class' lines found.")
    if not sections["object"] or not sections["live"]:
        raise DreamBenchError(
            f"{where}: expected an 'Object Prompts' and a 'Live Subject Prompts' list of quoted prompts "
            "with {0} (the identifier) and {1} (the class)."
        )
    return BenchFile(classes, sections["object"], sections["live"])


def format_prompt(template: str, identifier: str, class_name: str) -> str:
    """A prompt of the file (``'a {0} {1} in the jungle'``) for this subject: ``a sks dog in the jungle``."""
    return " ".join(template.replace("{0}", identifier).replace("{1}", class_name).split())


@dataclass
class Subject:
    name: str
    class_name: str
    images: list[Path]
    points: dict[str, Any] | None = None

    @property
    def live(self) -> bool:
        return self.class_name in LIVE_CLASSES


def dataset_folder(path: Path) -> Path:
    """The folder with the subject folders: ``path`` itself, or ``path/dataset`` (a clone of google/dreambooth)."""
    path = Path(path)
    if not path.is_dir():
        raise DreamBenchError(f"dataset folder {path} not found.")
    if not (path / PROMPTS_FILE).is_file() and (path / "dataset" / PROMPTS_FILE).is_file():
        return path / "dataset"
    return path


def load_subjects(
    folder: Path, bench: BenchFile, names: Sequence[str] | None, points: dict[str, Any] | None = None
) -> list[Subject]:
    """The subjects to run, in the file's order (or ``names``' order), each with its photos, checked."""
    chosen = list(dict.fromkeys(names)) if names else list(bench.classes)
    unknown = [n for n in chosen if n not in bench.classes]
    if unknown:
        raise DreamBenchError(
            f"--subjects: {', '.join(unknown)} not in {PROMPTS_FILE}; its subjects are {', '.join(bench.classes)}."
        )
    extra = sorted(set(points or {}) - set(bench.classes))
    if extra:
        raise DreamBenchError(f"--points names subjects not in {PROMPTS_FILE}: {', '.join(extra)}.")
    subjects = []
    for name in chosen:
        sub = folder / name
        images = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if sub.is_dir() else []
        if not images:
            raise DreamBenchError(f"subject {name!r}: no images in {sub} (expected {name}/*.jpg).")
        subject = Subject(name, bench.classes[name], images)
        if points and name in points:
            subject.points = check_points(name, points[name], len(images))
        subjects.append(subject)
    return subjects


def load_points(path: Path | None) -> dict[str, Any]:
    """``{subject: points}``: each a P3S Points document (``{"images": [{"positive": [[x, y]], "negative": []}]}``,
    one entry per photo in file-name order, x and y in [0, 1] of that photo), or the list of entries alone."""
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DreamBenchError(f"cannot read the points file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise DreamBenchError(f"{path}: must be a JSON object {{subject: points}}.")
    return data


def _point_list(where: str, value: Any) -> list[list[float]]:
    if not isinstance(value, list) or not all(
        isinstance(p, list | tuple)
        and len(p) == 2
        and all(isinstance(c, int | float) and not isinstance(c, bool) and 0 <= c <= 1 for c in p)
        for p in value
    ):
        raise DreamBenchError(f"{where}: a list of [x, y] points with x and y in [0, 1].")
    return [[float(x), float(y)] for x, y in value]


def check_points(subject: str, value: Any, count: int) -> dict[str, Any]:
    """One entry of the points file checked against the subject's ``count`` photos."""
    entries = value.get("images") if isinstance(value, dict) else value
    if not isinstance(entries, list) or len(entries) != count:
        raise DreamBenchError(
            f"points of {subject!r}: give one entry per photo ({count}, in file-name order), "
            'each {"positive": [[x, y], ...], "negative": [...]}.'
        )
    checked = []
    for number, entry in enumerate(entries, 1):
        where = f"points of {subject!r}, photo {number}"
        if not isinstance(entry, dict):
            raise DreamBenchError(f"{where}: an object with 'positive' and 'negative' lists.")
        positive = _point_list(f"{where} 'positive'", entry.get("positive", []))
        if not positive:
            raise DreamBenchError(f"{where}: at least one positive point on the subject.")
        checked.append(
            {"positive": positive, "negative": _point_list(f"{where} 'negative'", entry.get("negative", []))}
        )
    return {"version": 1, "images": checked}


# -- references and workflows -----------------------------------------------------------------


def _crop_box(width: int, height: int) -> tuple[int, int, int]:
    side = min(width, height)
    return (width - side) // 2, (height - side) // 2, side


def prepare_references(subject: Subject, folder: Path, size: int) -> tuple[Path, str | None]:
    """The subject's photos centre-cropped to squares of ``size`` px as one multi-page TIFF (ComfyUI's
    LoadImage reads its pages as a batch), and the points moved into the crops (our addition)."""
    from PIL import Image, ImageOps

    points = None
    pages = []
    moved = []
    for index, path in enumerate(subject.images):
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
        left, top, side = _crop_box(*image.size)
        pages.append(image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC))
        if subject.points:
            entry = subject.points["images"][index]
            shifted = {}
            for kind in ("positive", "negative"):
                shifted[kind] = [
                    [(x * image.width - left) / side, (y * image.height - top) / side] for x, y in entry[kind]
                ]
                if any(not (0 <= c <= 1) for p in shifted[kind] for c in p):
                    raise DreamBenchError(
                        f"points of {subject.name!r}, photo {index + 1} ({path.name}): a point is outside the "
                        "centred square crop the references get; move it onto the subject near the centre."
                    )
            moved.append(shifted)
    if subject.points:
        points = json.dumps({"version": 1, "images": moved})
    buffer = io.BytesIO()
    pages[0].save(buffer, format="TIFF", save_all=True, append_images=pages[1:], compression="tiff_lzw")
    data = buffer.getvalue()
    target = folder / f"references-{hashlib.sha256(data).hexdigest()[:12]}.tiff"  # new photos: a new item
    if not target.is_file():
        _write_atomic(target, data)
    return target, points


def _nodes(prompt: dict[str, Any], class_type: str) -> list[str]:
    found = [i for i, node in prompt.items() if node["class_type"] == class_type]
    if not found:
        raise DreamBenchError(f"the workflow has no {class_type} node; use the pack's example workflows.")
    return found


def _whole_image(prompt: dict[str, Any], size: int) -> None:
    """No points: the references unchanged and a full mask wherever the selection's outputs went."""
    (mask_node,) = _nodes(prompt, "P3SRngrMask")
    (inpaint,) = _nodes(prompt, "P3SInpaint")
    source = prompt[inpaint]["inputs"]["images"]
    prompt["900"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": size, "height": size}}
    for node in prompt.values():
        for name, value in node["inputs"].items():
            if value == [mask_node, 0]:
                node["inputs"][name] = ["900", 0]
            elif value == [inpaint, 0]:
                node["inputs"][name] = source


@dataclass
class Settings:
    """What the run changes in the example workflows (``None`` keeps the example's value)."""

    identifier: str = "sks"
    seed: int = 0
    train_seed: int = 0
    epochs: int | None = None
    resolution: int | None = None
    scope: str | None = None
    steps: int | None = None
    size: int | None = None
    reference_size: int = 512
    checkpoint: str | None = None
    clip_vision: str | None = None


def _common(prompt: dict[str, Any], settings: Settings, whole: bool) -> None:
    if settings.checkpoint:
        for i in _nodes(prompt, "CheckpointLoaderSimple"):
            prompt[i]["inputs"]["ckpt_name"] = settings.checkpoint
    if settings.clip_vision:
        for i in _nodes(prompt, "CLIPVisionLoader"):
            prompt[i]["inputs"]["clip_name"] = settings.clip_vision
    if whole:
        _whole_image(prompt, settings.reference_size)


def training_workflow(example: dict[str, Any], settings: Settings, whole: bool) -> tuple[dict[str, Any], str]:
    """The example's training part (references -> selection -> P3S Fine-tune, its loss plot saved) and the
    Fine-tune's node id."""
    prompt = copy.deepcopy(example)
    (train,) = _nodes(prompt, "P3SFineTune")
    _common(prompt, settings, whole)
    inputs = prompt[train]["inputs"]
    for key in ("epochs", "resolution", "scope"):
        if getattr(settings, key) is not None:
            inputs[key] = getattr(settings, key)
    inputs.update(seed=settings.train_seed, overwrite=True, attention_word=settings.identifier)
    savers = [i for i in _nodes(prompt, "SaveImage") if prompt[i]["inputs"]["images"] == [train, 1]]  # the loss plot
    return needed_nodes(prompt, [train, *savers]), train


def generation_workflow(
    example: dict[str, Any], settings: Settings, whole: bool
) -> tuple[dict[str, Any], dict[str, str]]:
    """The example's generation (P3S Loader -> P3S Apply -> KSampler -> Save Image) without the attention
    maps; the ids of its loader, prompt, sampler and image saver."""
    prompt = copy.deepcopy(example)
    (sampler,) = _nodes(prompt, "KSampler")
    model = prompt[sampler]["inputs"]["model"]
    if prompt[model[0]]["class_type"] == "P3SAttentionMaps":  # the maps watch the sampling; not needed here
        prompt[sampler]["inputs"]["model"] = prompt[model[0]]["inputs"]["model"]
    _common(prompt, settings, whole)
    positive = prompt[sampler]["inputs"]["positive"][0]
    decoders = [i for i in _nodes(prompt, "VAEDecode") if prompt[i]["inputs"]["samples"] == [sampler, 0]]
    savers = [i for i in _nodes(prompt, "SaveImage") if prompt[i]["inputs"]["images"] == [decoders[0], 0]]
    if settings.steps is not None:
        prompt[sampler]["inputs"]["steps"] = settings.steps
        for i in [i for i, n in prompt.items() if n["class_type"] == "P3SSchedule"]:
            prompt[i]["inputs"]["steps"] = settings.steps
    if settings.size is not None:
        for i in _nodes(prompt, "EmptyLatentImage"):
            prompt[i]["inputs"].update(width=settings.size, height=settings.size, batch_size=1)
    (loader,) = _nodes(prompt, "P3SLoader")
    ids = {"loader": loader, "text": positive, "sampler": sampler, "save": savers[0]}
    return needed_nodes(prompt, [savers[0]]), ids


def _item(item_id: str, values: dict[str, Any], image: tuple[str, Path]) -> BatchItem:
    """A batch item from ``{"<node>.<input>": value}`` and the references' LoadImage (node, file)."""
    node, path = image
    # The ledger knows the references by their content-hashed name: a moved OUT resumes too.
    params = {**values, f"@image:{node}.image": Path(path).name}
    overrides = [Override(*key.split(".", 1), value) for key, value in values.items()]
    overrides.append(Override(node, "image", str(path), image=True))
    return BatchItem(item_id, params, overrides)


def image_seed(base: int, prompt_index: int, image_index: int) -> int:
    """The seed of image ``image_index`` of prompt ``prompt_index`` (both from 0), the same in any subset."""
    return base + SEED_STRIDE * prompt_index + image_index


# -- files ------------------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    if isinstance(data, str):
        partial.write_text(data, encoding="utf-8")
    else:
        partial.write_bytes(data)
    os.replace(partial, path)


def _cell(key: str, value: Any) -> Any:
    if not isinstance(value, float):
        return value
    return f"{value:.6f}" if key.endswith("_var") else f"{value:.4f}"


def _csv_text(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(k, v) for k, v in row.items() if k in columns})
    return buffer.getvalue()


# -- scoring ----------------------------------------------------------------------------------


@dataclass
class EvalModels:
    """The protocol's two backbones found before anything runs; loaded once, at the first score."""

    clip: Path
    dino: Path
    tokenizer: Path | None
    loaded: tuple[Any, Any] | None = None

    def load(self) -> tuple[Any, Any]:
        if self.loaded is None:
            from p3s_core.scoring.backbones import load_clip, load_dino

            self.loaded = (load_clip(self.clip, self.tokenizer, "--eval-models"), load_dino(self.dino, "--eval-models"))
        return self.loaded


def find_eval_models(folder: Path, comfyui: str | None) -> EvalModels:
    """The CLIP and DINO files in ``folder`` (single files or snapshot folders), or the pack's error."""
    try:
        from p3s_core.errors import P3SInputError
        from p3s_core.scoring.backbones import TOKENIZER_FILES, resolve_backbone_file
        from p3s_core.scoring.protocol import CLIP_B32, DINO_S16
    except ImportError as exc:
        raise DreamBenchError(
            f"the scoring needs the pack's p3s_core ({exc}): run `python -m p3s_batch dreambench` from the "
            "pack's folder (custom_nodes/comfyui-p3s), with torch and transformers installed."
        ) from None

    found = []
    for backbone in (CLIP_B32, DINO_S16):
        stem = backbone.file_name.rsplit(".", 1)[0]
        snapshot = [
            folder / stem / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / stem / n).is_file()
        ]
        try:
            found.append(
                snapshot[0]
                if snapshot
                else resolve_backbone_file([folder], backbone.file_name, backbone, "--eval-models")
            )
        except P3SInputError as exc:
            raise DreamBenchError(f"{exc} (looked in {folder})") from None
    clip = found[0]
    tokenizer = None
    if not all((clip.parent / n).is_file() for n in TOKENIZER_FILES):
        tokenizer = Path(comfyui) / "comfy" / "sd1_tokenizer" if comfyui else None
        if tokenizer is None or not all((tokenizer / n).is_file() for n in TOKENIZER_FILES):
            raise DreamBenchError(
                f"--eval-models: CLIP-T needs CLIP's tokenizer (vocab.json, merges.txt) beside {clip.name}, or "
                "--comfyui DIR (ComfyUI's comfy/sd1_tokenizer)."
            )
    return EvalModels(clip, found[1], tokenizer)


def _read_image(path: Path):
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    with Image.open(path) as opened:
        rgb = ImageOps.exif_transpose(opened).convert("RGB")
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0)


# -- the run ----------------------------------------------------------------------------------


@dataclass
class RunOptions:
    """A DreamBench run: the data, the subset, the settings and the servers."""

    dataset: Path
    out: Path
    prompts_file: Path | None = None
    points: Path | None = None
    subjects: list[str] | None = None
    prompts: int | None = None
    images_per_prompt: int = IMAGES_PER_PROMPT
    settings: Settings = field(default_factory=Settings)
    eval_models: Path | None = None
    comfyui: str | None = None
    workflows: Path = EXAMPLES_API
    batch_options: Any = None


@dataclass
class Plan:
    """Everything checked before the first prompt is queued."""

    bench: BenchFile
    subjects: list[Subject]
    prompt_indices: list[int]
    train_example: dict[str, Any]
    generate_example: dict[str, Any]
    eval_models: EvalModels


def plan(options: RunOptions) -> Plan:
    """Every check that needs no server: dataset, prompts file, subjects, points, workflows, eval models."""
    folder = dataset_folder(options.dataset)
    prompts_file = options.prompts_file or folder / PROMPTS_FILE
    if not Path(prompts_file).is_file():
        raise DreamBenchError(
            f"{prompts_file} not found: give the prompts_and_classes.txt of your copy of the DreamBooth "
            "dataset (--prompts-file), it is not shipped with the pack."
        )
    bench = parse_prompts_and_classes(prompts_file)
    subjects = load_subjects(folder, bench, options.subjects, load_points(options.points))
    shortest = min(len(bench.object_prompts), len(bench.live_prompts))
    count = options.prompts if options.prompts is not None else shortest
    if not 1 <= count <= shortest:
        raise DreamBenchError(f"--prompts must be 1 to {shortest} (the file's lists).")
    if not 1 <= options.images_per_prompt <= SEED_STRIDE:
        raise DreamBenchError(f"--images-per-prompt must be 1 to {SEED_STRIDE}.")
    examples = []
    for name in (TRAIN_EXAMPLE, GENERATE_EXAMPLE):
        try:
            examples.append(load_workflow(Path(options.workflows) / name))
        except BatchInputError as exc:
            raise DreamBenchError(f"{exc} (--workflows: the pack's example_workflows/api folder)") from None
    if options.eval_models is None:
        if not options.comfyui:
            raise DreamBenchError("give --eval-models DIR (the p3s_eval model folder) or --comfyui DIR.")
        options.eval_models = Path(options.comfyui) / "models" / "p3s_eval"
    models = find_eval_models(Path(options.eval_models), options.comfyui)
    return Plan(bench, subjects, list(range(count)), examples[0], examples[1], models)


def _run_stage(
    workflow: dict[str, Any], items: list[BatchItem], out: Path, options: RunOptions, log: Callable[[str], None]
):
    from p3s_batch.cli import run_batch

    summary = run_batch(workflow, items, out, options.batch_options, log=log)
    if summary.interrupted:
        raise KeyboardInterrupt
    if summary.failed or summary.stopped or summary.pending:
        raise StageFailed(
            f"{out}: {summary.failed} failed, {summary.pending} pending ({summary.stopped or 'see the ledger'})"
        )
    return summary


class StageFailed(RuntimeError):
    """A stage ended with items not done; rerun the same command (after fixing the cause) to resume."""


def run_key(out: Path) -> str:
    return hashlib.sha256(str(Path(out).resolve()).encode()).hexdigest()[:10]


def run_subject(subject: Subject, plan_: Plan, options: RunOptions, log: Callable[[str], None]) -> dict[str, Any]:
    """Train, generate and score one subject (each stage skipped when done); its summary row."""
    settings = options.settings
    folder = Path(options.out) / subject.name
    references, points = prepare_references(subject, folder, settings.reference_size)
    whole = points is None
    model_name = f"p3s_dreambench/{run_key(options.out)}/{subject.name}.safetensors"
    instance = f"a photo of {settings.identifier} {subject.class_name}"

    train_flow, train_node = training_workflow(plan_.train_example, settings, whole)
    (load_node,) = [i for i in _nodes(train_flow, "LoadImage")]
    values: dict[str, Any] = {f"{train_node}.instance_prompt": instance, f"{train_node}.save_name": model_name}
    if points:
        (points_node,) = _nodes(train_flow, "P3SPoints")
        values[f"{points_node}.points"] = points
    log(f"dreambench: {subject.name} ({subject.class_name}): training")
    _run_stage(train_flow, [_item("train", values, (load_node, references))], folder / "train", options, log)

    gen_flow, ids = generation_workflow(plan_.generate_example, settings, whole)
    (gen_load,) = _nodes(gen_flow, "LoadImage")
    templates = plan_.bench.prompts_for(subject.class_name)
    items, meta = [], []
    for p in plan_.prompt_indices:
        text = format_prompt(templates[p], settings.identifier, subject.class_name)
        for k in range(options.images_per_prompt):
            seed = image_seed(settings.seed, p, k)
            values = {
                f"{ids['loader']}.model_name": model_name,
                f"{ids['text']}.text": text,
                f"{ids['sampler']}.seed": seed,
            }
            if points:
                (points_node,) = _nodes(gen_flow, "P3SPoints")
                values[f"{points_node}.points"] = points
            item_id = f"p{p:02d}-{k}"
            items.append(_item(item_id, values, (gen_load, references)))
            meta.append({"item": item_id, "prompt_index": p, "image_index": k, "prompt": text, "seed": seed})
    log(f"dreambench: {subject.name}: generating {len(items)} image(s)")
    _run_stage(gen_flow, items, folder / "generate", options, log)
    return score_subject_run(subject, folder, meta, ids["save"], plan_, options, log)


def score_subject_run(
    subject: Subject,
    folder: Path,
    meta: list[dict[str, Any]],
    save_node: str,
    plan_: Plan,
    options: RunOptions,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The subject's scores (``scores.csv`` per image, ``scores.md``, ``scores.json``), computed once per
    set of images."""
    with Ledger(folder / "generate", lock=False) as ledger:
        records = ledger.items()
    files = []
    for entry in meta:
        outputs = [f for f in records[entry["item"]].outputs if Path(f).name.startswith(f"{save_node}_")]
        if len(outputs) != 1:
            raise StageFailed(f"{subject.name} {entry['item']}: expected one generated image, the ledger has {outputs}")
        files.append(folder / "generate" / outputs[0])
    fingerprint = hashlib.sha256(SCORES_VERSION.encode())
    for path, entry in zip(files, meta, strict=True):
        fingerprint.update(f"{entry['item']}:{entry['seed']}:{entry['prompt']}:".encode())
        fingerprint.update(hashlib.sha256(path.read_bytes()).digest())
    key = fingerprint.hexdigest()
    summary_file = folder / "scores.json"
    if summary_file.is_file():
        done = json.loads(summary_file.read_text())
        if done.get("fingerprint") == key:
            log(f"dreambench: {subject.name}: scored before")
            return done["row"]
    from p3s_core.scoring.report import protocol_note, score_table
    from p3s_core.scoring.subject_score import score_subject

    clip, dino = plan_.eval_models.load()
    log(f"dreambench: {subject.name}: scoring {len(files)} image(s) against {len(subject.images)} reference(s)")
    scores = score_subject(
        [_read_image(p) for p in files],
        [_read_image(p) for p in subject.images],
        [entry["prompt"] for entry in meta],
        clip,
        dino,
        identifier=options.settings.identifier,
    )
    per_image = []
    for entry, path, row in zip(meta, files, scores.rows(), strict=True):
        per_image.append(
            {
                **entry,
                "file": str(path.relative_to(folder)),
                "clip_t_prompt": row["prompt"],
                **{m: row[m] for m in METRICS},
            }
        )
    columns = ["item", "prompt_index", "image_index", "seed", "prompt", "clip_t_prompt", "file", *METRICS]
    row = {
        "subject": subject.name,
        "class": subject.class_name,
        "kind": "live" if subject.live else "object",
        "selection": "points" if subject.points else "whole image",
        "references": len(subject.images),
        "prompts": len(plan_.prompt_indices),
        "images_per_prompt": options.images_per_prompt,
        "images": len(files),
        **{m: scores.mean(m) for m in METRICS},
        **{v: scores.summaries[v.removesuffix("_var")].variance for v in VARIANCES},
        "train_seed": options.settings.train_seed,
        "seed_base": options.settings.seed,
        "protocol": "yes" if scores.protocol else "no",
        "note": protocol_note(scores),
    }
    _write_atomic(folder / "scores.csv", _csv_text(per_image, columns))
    _write_atomic(
        folder / "scores.md",
        f"# {subject.name} ({subject.class_name})\n\n{seeds_line(options)}\n\n{score_table(scores)}",
    )
    _write_atomic(summary_file, json.dumps({"fingerprint": key, "row": row}, indent=2))
    return row


SUMMARY_COLUMNS = [
    "subject",
    "class",
    "kind",
    "selection",
    "references",
    "prompts",
    "images_per_prompt",
    "images",
    *METRICS,
    *VARIANCES,
    "train_seed",
    "seed_base",
    "protocol",
]


def seeds_line(options: RunOptions) -> str:
    s = options.settings
    return (
        f"Seeds: P3S Fine-tune seed {s.train_seed}; image k (from 0) of prompt p (from 0, the file's order) "
        f"has KSampler seed {s.seed} + {SEED_STRIDE} x p + k (our choice: the same in any subset)."
    )


def overall_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean over subjects (each subject weighs the same, as in DreamBooth's tables)."""
    total = {"subject": "overall", "class": "", "kind": "", "selection": ""}
    for key in ("references", "images"):
        total[key] = sum(int(r[key]) for r in rows)
    total["prompts"] = "" if len({r["prompts"] for r in rows}) > 1 else rows[0]["prompts"]
    total["images_per_prompt"] = rows[0]["images_per_prompt"]
    for metric in METRICS:
        total[metric] = math.fsum(float(r[metric]) for r in rows) / len(rows)
    # The variance over all images, pooled from the subjects' means and variances.
    counts = [int(r["images"]) for r in rows]
    for key in VARIANCES:
        means = [float(r[key.removesuffix("_var")]) for r in rows]
        grand = math.fsum(n * m for n, m in zip(counts, means, strict=True)) / sum(counts)
        spread = [n * (float(r[key]) + (m - grand) ** 2) for n, m, r in zip(counts, means, rows, strict=True)]
        total[key] = math.fsum(spread) / sum(counts)
    total.update(train_seed=rows[0]["train_seed"], seed_base=rows[0]["seed_base"])
    total["protocol"] = "yes" if all(r["protocol"] == "yes" for r in rows) else "no"
    return total


def write_overall(rows: list[dict[str, Any]], options: RunOptions) -> tuple[Path, Path]:
    """``OUT/dreambench.csv`` and ``OUT/dreambench.md``: one row per subject and the overall row."""
    out = Path(options.out)
    table = [*rows, overall_row(rows)]
    csv_path, md_path = out / "dreambench.csv", out / "dreambench.md"
    _write_atomic(csv_path, _csv_text(table, SUMMARY_COLUMNS))
    lines = [
        "# DreamBench scores",
        "",
        "; ".join(part for part in rows[0]["note"].rstrip(".").split("; ") if "reference(s)" not in part) + ".",
        "",
        seeds_line(options),
        "",
        "| subject | class | images | CLIP-I | CLIP-T | DINO | CLIP-Iv | DINO-v |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in table:
        name = f"**{row['subject']}**" if row["subject"] == "overall" else row["subject"]
        values = " | ".join([*(f"{row[m]:.4f}" for m in METRICS), *(f"{row[v]:.4f}" for v in VARIANCES)])
        lines.append(f"| {name} | {row['class']} | {row['images']} | {values} |")
    paper = " | ".join(f"{PAPER_TABLE_I[m]:.4f}" for m in (*METRICS, *VARIANCES))
    lines += [
        f"| P3S paper, Table I | | | {paper} |",
        "",
        "The paper's DINO is DINOv2, ours DreamBooth's DINO ViT-S/16: compare its DINO and DINO-v with care.",
        "",
        "CLIP-I and DINO: mean cosine of each generated image with each reference photo; CLIP-T: cosine of "
        "each image with its prompt, the identifier removed. The overall row is the mean over subjects; "
        "CLIP-Iv and DINO-v are the variances over the images (the overall row's pooled over all images).",
        "",
    ]
    _write_atomic(md_path, "\n".join(lines))
    return csv_path, md_path


def run(options: RunOptions, log: Callable[[str], None] = print) -> tuple[Path, Path]:
    """The whole run (resumable); the overall CSV and markdown files."""
    checked = plan(options)
    Path(options.out).mkdir(parents=True, exist_ok=True)
    log(
        f"dreambench: {len(checked.subjects)} subject(s) x {len(checked.prompt_indices)} prompt(s) x "
        f"{options.images_per_prompt} image(s); output {options.out}"
    )
    rows = [run_subject(subject, checked, options, log) for subject in checked.subjects]
    paths = write_overall(rows, options)
    log(f"dreambench: wrote {paths[0]} and {paths[1]}")
    return paths


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="p3s-batch dreambench",
        description="DreamBench (DreamBooth's benchmark) on ComfyUI servers: select, P3S Fine-tune, generate, score.",
    )
    parser.add_argument(
        "dataset", type=Path, help="DreamBooth's dataset folder (<subject>/*.jpg, prompts_and_classes.txt)"
    )
    parser.add_argument("-o", "--out", type=Path, required=True, help="output folder (ledgers, images, scores)")
    parser.add_argument("--prompts-file", type=Path, help="prompts_and_classes.txt (default: in the dataset folder)")
    parser.add_argument("--points", type=Path, help="JSON {subject: P3S Points}; subjects without: the whole image")
    parser.add_argument("--subjects", help="comma-separated subset of subjects (default all)")
    parser.add_argument("--prompts", type=int, help="the first N prompts of each list (default all 25)")
    parser.add_argument("--images-per-prompt", type=int, default=IMAGES_PER_PROMPT, help="default 4 (DreamBench)")
    parser.add_argument("--identifier", default="sks", help="the subject's identifier word (default sks)")
    parser.add_argument("--seed", type=int, default=0, help="image seeds: SEED + 100 x prompt + image (default 0)")
    parser.add_argument("--train-seed", type=int, default=0, help="P3S Fine-tune seed (default 0)")
    parser.add_argument("--epochs", type=int, help="P3S Fine-tune epochs (default: the example's 60)")
    parser.add_argument("--resolution", type=int, help="P3S Fine-tune resolution (default: the example's 512)")
    parser.add_argument("--scope", help="P3S Fine-tune scope (default: the example's)")
    parser.add_argument("--steps", type=int, help="sampling steps (default: the example's 50, DDIM)")
    parser.add_argument("--size", type=int, help="generated image side, px (default: the example's 512)")
    parser.add_argument("--reference-size", type=int, default=512, help="side of the cropped references (default 512)")
    parser.add_argument("--checkpoint", help="SD1.5 checkpoint name (default: the example's)")
    parser.add_argument("--clip-vision", help="CLIP vision name (default: the example's)")
    parser.add_argument(
        "--eval-models", type=Path, help="folder with the scoring backbones (default COMFYUI/models/p3s_eval)"
    )
    parser.add_argument(
        "--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI folder (tokenizer, eval models)"
    )
    parser.add_argument("--workflows", type=Path, default=EXAMPLES_API, help="the pack's example_workflows/api folder")
    parser.add_argument(
        "--server", action="append", dest="servers", help="ComfyUI URL, repeatable (default 127.0.0.1:8188)"
    )
    parser.add_argument("--retries", type=int, default=2, help="retries per failed item (default 2)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds a prompt may run (default 3600)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    for name in ("epochs", "resolution", "steps", "size", "reference_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    from p3s_batch.cli import DEFAULT_SERVER, BatchOptions

    args = parse_args(argv)
    settings = Settings(
        identifier=args.identifier,
        seed=args.seed,
        train_seed=args.train_seed,
        epochs=args.epochs,
        resolution=args.resolution,
        scope=args.scope,
        steps=args.steps,
        size=args.size,
        reference_size=args.reference_size,
        checkpoint=args.checkpoint,
        clip_vision=args.clip_vision,
    )
    servers = [url.rstrip("/") for url in (args.servers or [DEFAULT_SERVER])]
    options = RunOptions(
        dataset=args.dataset,
        out=args.out,
        prompts_file=args.prompts_file,
        points=args.points,
        subjects=[s.strip() for s in args.subjects.split(",") if s.strip()] if args.subjects else None,
        prompts=args.prompts,
        images_per_prompt=args.images_per_prompt,
        settings=settings,
        eval_models=args.eval_models,
        comfyui=args.comfyui,
        workflows=args.workflows,
        batch_options=BatchOptions(
            servers=servers,
            retries=args.retries,
            timeout=args.timeout,
            progress_bar=False if args.no_progress else None,
        ),
    )
    log = lambda line: print(line, flush=True)  # noqa: E731
    try:
        run(options, log)
    except DreamBenchError as exc:
        print(f"p3s-batch dreambench: {exc}", file=sys.stderr)
        return 2
    except (LedgerBusy, StageFailed) as exc:
        print(f"p3s-batch dreambench: {exc}; rerun the same command to resume", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("p3s-batch dreambench: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0
