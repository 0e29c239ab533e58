"""Bad input fails fast with the pack's own words: every node, in-process, one table row per case.

Each row runs a node's ``execute`` with one input spoilt and checks the message. The expensive
steps (ComfyUI loading a model onto the device, the CLIP text encode, the VAE encode, training,
the P3S copy being rebuilt) are replaced by spies that raise :class:`ExpensiveStep`: a bad-input
row must fail before any of them, and one control row per node with good input shows that the
spies are reached when nothing is wrong. Every message is short, and names no server path.

KJNodes strings are exactly what its Points Editor emits, read from kijai/ComfyUI-KJNodes:
``nodes/curve_nodes.py`` (``PointsEditor.pointdata``: ``json.dumps`` of ``[{"x": int, "y": int}]``
or, with ``normalize``, of ``[{"x": x / width, "y": y / height}]``; an empty negative widget
gives ``json.dumps("")``) and ``web/js/editors/point_editor_canvas.js`` (``updateData``:
``coordinates`` = ``JSON.stringify(points)``, ``points_store`` =
``JSON.stringify({positive, negative})``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import pytest
import torch
from core.inspection.test_attention_overlay import TokenizerClip

from devtools.pack_modules import import_pack_module, pack_core
from devtools.tiny_models import tiny_sd15_patcher

finetune = import_pack_module("nodes.finetune_node")
apply_node = import_pack_module("nodes.p3s_apply_node")
rngr = import_pack_module("nodes.rngr_mask_node")
points_node = import_pack_module("nodes.points_node")
inpaint_node = import_pack_module("nodes.inpaint_node")
schedule_node = import_pack_module("nodes.schedule_node")
attention = import_pack_module("nodes.attention_nodes")
glue = import_pack_module("nodes.attention_patching")
loader = import_pack_module("nodes.loader_node")
core = pack_core(finetune)
P3SInputError = core.errors.P3SInputError

DEEP = "[" * 5000 + "]" * 5000
HUGE = "x" * 5_000_000
POINTS = '{"version": 1, "images": [{"positive": [[0.5, 0.5]], "negative": []}]}'
KJ_PIXELS = json.dumps([{"x": 120, "y": 80}, {"x": 40, "y": 30}])  # PointsEditor, normalize off
KJ_NORMALISED = json.dumps([{"x": 120 / 512, "y": 80 / 512}])  # PointsEditor, normalize on
KJ_NO_NEGATIVES = json.dumps("")  # PointsEditor's negative_coords when its widget is empty
KJ_STORE = json.dumps({"positive": [{"x": 256, "y": 256}], "negative": []}, separators=(",", ":"))
MAX_MESSAGE = 700


class ExpensiveStep(Exception):
    """Raised by a spy: the node reached a step that loads, encodes or trains."""


class CountingClip(TokenizerClip):
    """ComfyUI's real SD1.5 tokenizer; encoding is an expensive step."""

    def encode_from_tokens(self, tokens):
        raise ExpensiveStep("CLIP text encode")


class CountingVae:
    def encode(self, images):
        raise ExpensiveStep("VAE encode")


class ClipVisionStandin:
    """What the nodes read of a ``ClipVisionModel`` before they load it."""

    image_size = 224
    image_mean = image_std = (0.5, 0.5, 0.5)
    load_device = torch.device("cpu")
    patcher = object()

    def __init__(self):
        self.model = torch.nn.Module()
        self.model.vision_model = torch.nn.Module()
        self.model.vision_model.encoder = torch.nn.Module()
        self.model.vision_model.encoder.layers = torch.nn.ModuleList([torch.nn.Identity()] * 4)
        self.model.vision_model.embeddings = torch.nn.Module()
        self.model.vision_model.embeddings.class_embedding = torch.nn.Parameter(torch.zeros(16))
        self.model.vision_model.embeddings.patch_embedding = torch.nn.Conv2d(3, 16, 14, stride=14)


@pytest.fixture(scope="module")
def tiny_model():
    return tiny_sd15_patcher(seed=0)


@pytest.fixture
def spies(monkeypatch, tmp_path):
    """Every expensive step raises; the p3s model folder is ``tmp_path``."""
    import comfy.model_management
    import folder_paths

    def spy(name):
        def run(*args, **kwargs):
            raise ExpensiveStep(name)

        return run

    monkeypatch.setattr(comfy.model_management, "load_model_gpu", spy("load a model"))
    monkeypatch.setattr(comfy.model_management, "load_models_gpu", spy("load models"))
    monkeypatch.setattr(finetune, "train_p3s", spy("training"))
    monkeypatch.setattr(finetune, "new_p3s_model", spy("new P3S model"))
    monkeypatch.setattr(apply_node, "p3s_model_from_file", spy("rebuild the P3S copy"))
    monkeypatch.setattr(rngr, "rngr_masks", spy("RNGR mask"))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "p3s", ([str(tmp_path)], {".safetensors"}))
    (tmp_path / "taken.safetensors").write_bytes(b"x")
    return tmp_path


def images(batch: int = 1) -> torch.Tensor:
    return torch.full((batch, 64, 96, 3), 0.5)


def masks(batch: int = 1) -> torch.Tensor:
    return torch.ones(batch, 64, 96)


def point_sets(count: int):
    return core.selection.points.make_points([([(0.5, 0.5)], [])] * count)


def finetune_inputs(model) -> dict:
    return dict(
        model=model, clip=CountingClip(), vae=CountingVae(), clip_vision=ClipVisionStandin(),
        reference_images=images(), subject_mask=masks(), instance_prompt="a photo of sks dog", epochs=1, lr=1e-5,
        gamma=0.1, dropout=0.1, resolution=64, batch_size=1, seed=0, precision="auto", scope="injection",
        gradient_checkpointing=False, save_name="p3s/subject.safetensors", overwrite=False, captions="",
        attention_word="sks",
    )  # fmt: skip


def apply_inputs(model) -> dict:
    return dict(
        model=model, p3s_model=object(), reference_images=images(), subject_mask=masks(), vae=CountingVae(),
        clip_vision=ClipVisionStandin(), strength=1.0, start_percent=0.0, end_percent=1.0, apply_to_uncond=False,
        reference_mode="cycle",
    )  # fmt: skip


def rngr_inputs(model) -> dict:
    return dict(images=images(), points=point_sets(1), clip_vision=ClipVisionStandin(), layer=-2, sigma=1.0, dilation=8)


def points_inputs(model) -> dict:
    return dict(points=POINTS)


def inpaint_inputs(model) -> dict:
    return dict(images=images(), mask=masks(), method="fill_outside", radius=5, fill=0.5)


def schedule_inputs(model) -> dict:
    return dict(
        curve="custom", start_weight=1.0, end_weight=1.0, strength=1.0, start_percent=0.0, end_percent=1.0, steps=4,
        custom_points="[[0, 0.5], [1, 1]]",
    )  # fmt: skip


def attention_inputs(model) -> dict:
    return dict(
        model=model, clip=CountingClip(), prompt="a photo of sks dog", words="sks, dog", layer="output_11",
        normalisation="mean", max_side=8,
    )  # fmt: skip


def loader_inputs(model) -> dict:
    return dict(model_name="taken.safetensors")


NODES = {
    "finetune": (finetune.P3SFineTune, finetune_inputs),
    "apply": (apply_node.P3SApply, apply_inputs),
    "rngr": (rngr.P3SRngrMask, rngr_inputs),
    "points": (points_node.P3SPointsNode, points_inputs),
    "inpaint": (inpaint_node.P3SInpaint, inpaint_inputs),
    "schedule": (schedule_node.P3SScheduleNode, schedule_inputs),
    "attention": (attention.P3SAttentionMaps, attention_inputs),
    "loader": (loader.P3SLoaderNode, loader_inputs),
}
EXPENSIVE = "<reaches an expensive step>"
OK = "<succeeds>"


@dataclass(frozen=True)
class Case:
    """``node`` run with ``inputs`` changed: fails with ``expect`` in its message, or EXPENSIVE / OK."""

    name: str
    node: str
    inputs: dict = field(default_factory=dict)
    expect: str = ""


CASES = [
    # Controls: good input reaches the expensive steps (so the spies would catch a late check).
    Case("control: fine-tune", "finetune", {}, EXPENSIVE),
    Case("control: apply", "apply", {}, EXPENSIVE),
    Case("control: rngr", "rngr", {}, EXPENSIVE),
    # 1. Silent wrong results.
    Case("apply strength NaN", "apply", {"strength": math.nan}, "strength is nan"),
    Case("apply strength inf", "apply", {"strength": math.inf}, "strength is inf"),
    Case("inpaint fill NaN", "inpaint", {"fill": math.nan}, "fill is nan"),
    Case("schedule weight NaN", "schedule", {"start_weight": math.nan}, "start_weight is nan"),
    Case("schedule start_percent NaN", "schedule", {"start_percent": math.nan}, "start_percent is nan"),
    # 2. Checks that ran after expensive work (or not at all).
    Case("save_name con", "finetune", {"save_name": "con"}, "'con', a reserved device name"),
    Case("save_name CON.safetensors", "finetune", {"save_name": "p3s/CON.safetensors"}, "reserved device name"),
    Case("save_name lpt1 in a folder", "finetune", {"save_name": "lpt1/x.safetensors"}, "reserved device name"),
    Case("save_name .safetensors", "finetune", {"save_name": ".safetensors"}, "empty file name before"),
    Case("save_name NUL byte", "finetune", {"save_name": "a\x00b.safetensors"}, "contains '\\x00'"),
    Case("save_name newline", "finetune", {"save_name": "a\nb.safetensors"}, "contains '\\n'"),
    Case("save_name 312 characters", "finetune", {"save_name": "a" * 300 + ".safetensors"}, "bytes; file systems"),
    Case("save_name long path", "finetune", {"save_name": "/".join(["d" * 50] * 5) + ".safetensors"}, "at most 200"),
    Case("save_name other extension", "finetune", {"save_name": "subject.ckpt"}, "ends in '.ckpt'"),
    Case("save_name trailing dot", "finetune", {"save_name": "sub./x.safetensors"}, "ends with a dot"),
    Case("save_name Windows characters", "finetune", {"save_name": "a?b.safetensors"}, "contains '?'"),
    Case("save_name escapes", "finetune", {"save_name": "../x.safetensors"}, "outside the models folder"),
    Case("save_name absolute", "finetune", {"save_name": "/etc/x.safetensors"}, "outside the models folder"),
    Case("save_name drive", "finetune", {"save_name": "C:/x.safetensors"}, "outside the models folder"),
    Case("fine-tune gamma NaN", "finetune", {"gamma": math.nan}, "gamma is nan"),
    Case("fine-tune lr inf", "finetune", {"lr": math.inf}, "lr is inf"),
    Case("fine-tune dropout NaN", "finetune", {"dropout": math.nan}, "dropout is nan"),
    Case("fine-tune gamma < 0", "finetune", {"gamma": -1.0}, "gamma is -1, outside [0, inf]"),
    Case("fine-tune hint_lr_scale NaN", "finetune", {"hint_lr_scale": math.nan}, "hint_lr_scale is nan"),
    Case("fine-tune background_loss_weight 2", "finetune", {"background_loss_weight": 2.0}, "outside [0, 1]"),
    Case(
        "fine-tune framing, empty mask",
        "finetune",
        {"frame_subject": True, "subject_mask": torch.zeros(1, 64, 96)},
        "subject mask of reference image 1 (of 1) is empty",
    ),
    Case(
        "fine-tune all-zero mask",
        "finetune",
        {"subject_mask": torch.zeros(1, 64, 96)},
        "reference image 1 (of 1) is empty",
    ),
    Case(
        "fine-tune second mask all zero",
        "finetune",
        {"reference_images": images(2), "subject_mask": torch.stack([masks()[0], torch.zeros(64, 96)])},
        "reference image 2 (of 2) is empty",
    ),
    Case(
        "control: fine-tune one-pixel mask",
        "finetune",
        {
            "subject_mask": torch.zeros(1, 64, 96).index_put_(
                (torch.tensor([0]), torch.tensor([5]), torch.tensor([7])), torch.tensor(1.0)
            )
        },
        EXPENSIVE,
    ),
    Case("apply all-zero mask", "apply", {"subject_mask": torch.zeros(1, 64, 96)}, "reference image 1 (of 1) is empty"),
    Case("save_name a folder", "finetune", {"save_name": "p3s/"}, "names a folder, not a file"),
    Case("save_name a folder with a dot", "finetune", {"save_name": "p3s/."}, "names a folder, not a file"),
    Case("save_name lone surrogate", "finetune", {"save_name": "p3s/a\udcff.safetensors"}, "save_name holds '\\udcff'"),
    Case(
        "instance_prompt lone surrogate", "finetune", {"instance_prompt": "a photo of \udcff"}, "instance_prompt holds"
    ),
    Case("attention_word lone surrogate", "finetune", {"attention_word": "\ud800"}, "attention_word holds"),
    Case("attention words lone surrogate", "attention", {"words": "sks, \udcff"}, "words holds"),
    Case("attention prompt lone surrogate", "attention", {"prompt": "a \udcff dog"}, "prompt holds"),
    Case("fine-tune frame_margin NaN", "finetune", {"frame_subject": True, "frame_margin": math.nan}, "frame_margin"),
    Case("control: fine-tune framed", "finetune", {"frame_subject": True}, EXPENSIVE),
    Case("fine-tune injection_rank < -1", "finetune", {"injection_rank": -3}, "injection_rank must be between -1"),
    Case("fine-tune word missing", "finetune", {"attention_word": "cat"}, "'cat' not found in the prompt"),
    Case("fine-tune captions count", "finetune", {"captions": "one\ntwo"}, "2 captions for 1 reference images"),
    Case("fine-tune mask size", "finetune", {"subject_mask": torch.ones(1, 32, 32)}, "are 32x32 but"),
    Case("fine-tune mask count", "finetune", {"subject_mask": torch.ones(2, 64, 96)}, "but 2 subject masks"),
    Case("rngr sigma NaN", "rngr", {"sigma": math.nan}, "sigma is nan"),
    Case("rngr sigma inf", "rngr", {"sigma": math.inf}, "sigma is inf"),
    Case("rngr layer", "rngr", {"layer": -9}, "layer -9 does not exist"),
    Case("apply inverted window", "apply", {"start_percent": 0.8, "end_percent": 0.2}, "the window is empty"),
    Case("apply window NaN", "apply", {"end_percent": math.nan}, "end_percent is nan"),
    Case("apply mask count", "apply", {"subject_mask": torch.ones(3, 64, 96)}, "but 3 subject masks"),
    # 3. Words: see test_attention_words_on_a_chunk_boundary_are_found.
    Case("attention word missing", "attention", {"words": "cat"}, "'cat' not found in the prompt"),
    # 4. Unclear errors.
    Case("points nested 5000 deep", "points", {"points": DEEP}, "nested 5000 levels deep; at most 32"),
    Case("kj nested 5000 deep", "points", {"kj_positive": DEEP, "image": images()}, "nested 5000 levels"),
    Case("schedule nested 5000 deep", "schedule", {"custom_points": DEEP}, "custom_points is nested 5000"),
    Case("points: KJ pixel list pasted", "points", {"points": KJ_PIXELS}, "connect the Points Editor's positive"),
    Case("points: KJ points_store pasted", "points", {"points": KJ_STORE}, "look like KJNodes Points Editor pixel"),
    Case(
        "points: unknown key",
        "points",
        {"points": '{"images": [{"positív": [[0.5, 0.5]]}]}'},
        "unknown key(s) 'positív' (did you mean 'positive'?)",
    ),
    Case("points: unknown top key", "points", {"points": '{"image": []}'}, "'image' (did you mean 'images'?)"),
    Case("points: version '1'", "points", {"points": POINTS.replace("1", '"1"', 1)}, OK),
    Case("points: version 2", "points", {"points": POINTS.replace("1", "2", 1)}, "version 2 is not one"),
    Case("points: version 'one'", "points", {"points": POINTS.replace("1", '"one"', 1)}, "version 'one' is not"),
    Case("points: a dict", "points", {"points": json.loads(POINTS)}, OK),
    Case("points: a dict through ComfyUI's str()", "points", {"points": str(json.loads(POINTS))}, OK),
    Case("points: a list of pairs", "points", {"points": "[[0.5, 0.5]]"}, "a list of [x, y] pairs, not of images"),
    Case(
        "points: extra sets",
        "points",
        {"points": json.dumps({"images": [{"positive": [[0.5, 0.5]]}] * 3}), "image": images(2)},
        "3 point sets for 2 reference image(s): give one point set per image (remove the last 1",
    ),
    Case("rngr: extra sets", "rngr", {"points": point_sets(2)}, "2 point sets for 1 reference image(s)"),
    Case("rngr: missing sets", "rngr", {"images": images(3), "points": point_sets(2)}, "3 reference images but"),
    # KJNodes input as the Points Editor emits it.
    Case("kj pixels need a size", "points", {"kj_positive": KJ_PIXELS}, "set kj_width and kj_height"),
    Case("kj pixels on the image", "points", {"kj_positive": KJ_PIXELS, "image": torch.zeros(1, 200, 300, 3)}, OK),
    Case("kj pixels with the editor size", "points", {"kj_positive": KJ_PIXELS, "kj_width": 512, "kj_height": 512}, OK),
    Case(
        "kj pixels beyond the editor size",
        "points",
        {"kj_positive": KJ_PIXELS, "kj_width": 100, "kj_height": 100},
        "outside the 100x100 image",
    ),
    Case("kj only a width", "points", {"kj_positive": KJ_PIXELS, "kj_width": 512}, "set both"),
    Case("kj normalised, no size needed", "points", {"kj_positive": KJ_NORMALISED}, OK),
    Case("kj empty negatives", "points", {"kj_positive": KJ_NORMALISED, "kj_negative": KJ_NO_NEGATIVES}, OK),
    Case("kj NaN", "points", {"kj_positive": '[{"x": NaN, "y": 1}]'}, "finite values >= 0"),
    # 5. Long values are quoted as an excerpt.
    Case("5 MB points", "points", {"points": HUGE}, "5000000 characters long; at most 1000000"),
    Case("5 MB save_name", "finetune", {"save_name": HUGE}, "(5000000 characters)"),
    Case("5 MB words", "attention", {"words": HUGE}, "(5000000 characters); at most 1000"),
    Case("5 MB prompt", "attention", {"prompt": HUGE}, "(5000000 characters); at most 20000"),
    Case("5 MB instance prompt", "finetune", {"instance_prompt": HUGE}, "(5000000 characters); at most 20000"),
    Case("5 MB custom points", "schedule", {"custom_points": HUGE}, "custom_points is 5000000 characters"),
    Case("5 MB model name", "loader", {"model_name": HUGE}, "(5000000 characters)"),
    # Already refused before this change: they stay refused.
    Case("points empty", "points", {"points": " "}, "No points given"),
    Case("points broken JSON", "points", {"points": '{"images": [{"positive": [[0.5'}, "not valid JSON"),
    Case("points no positive", "points", {"points": '[{"positive": [], "negative": [[0.1, 0.1]]}]'}, "No positive"),
    Case("points outside", "points", {"points": '[{"positive": [[1.5, 0.5]]}]'}, "outside the image"),
    Case("points NaN", "points", {"points": '[{"positive": [[NaN, 0.5]]}]'}, "outside the image"),
    Case("schedule inverted window", "schedule", {"start_percent": 0.9, "end_percent": 0.1}, "window is empty"),
    Case("loader escapes", "loader", {"model_name": "../x.safetensors"}, "outside the models folder"),
    Case("loader missing", "loader", {"model_name": "gone.safetensors"}, "No P3S model named 'gone.safetensors'"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_fails_before_expensive_steps_with_a_clear_message(case: Case, spies, tiny_model):
    node, defaults = NODES[case.node]
    inputs = {**defaults(tiny_model), **case.inputs}
    if case.expect == OK:
        node.execute(**inputs)
        return
    with pytest.raises(Exception) as info:
        node.execute(**inputs)
    if case.expect == EXPENSIVE:
        assert info.type is ExpensiveStep, f"good input should reach an expensive step: {info.value!r}"
        return
    assert info.type is P3SInputError, f"{info.type.__name__} {str(info.value)[:300]}"
    message = str(info.value)
    assert case.expect in message
    assert len(message) < MAX_MESSAGE, f"{len(message)} characters"
    assert str(spies) not in message, "the message names a path on the server"


def test_kj_strings_land_where_the_editor_put_them():
    """Pixels picked on a 512x512 editor canvas, the same points normalised, and the image P3S gets."""
    size = (512, 512)
    from_pixels = core.selection.points.parse_kj_points(KJ_PIXELS, "positive", size)
    assert from_pixels == ((120 / 512, 80 / 512), (40 / 512, 30 / 512))
    assert core.selection.points.parse_kj_points(KJ_NORMALISED, "positive", None) == ((120 / 512, 80 / 512),)
    # The canvas' own widget value (JSON.stringify, floats while dragging) reads the same way.
    widget = json.dumps([{"x": 120.4, "y": 79.6}], separators=(",", ":"))
    assert core.selection.points.parse_kj_points(widget, "positive", size) == ((120.4 / 512, 79.6 / 512),)
    out = points_node.P3SPointsNode.execute(
        points=POINTS, image=torch.zeros(1, 300, 400, 3), kj_positive=KJ_PIXELS, kj_width=512, kj_height=512
    )
    # The editor's 512x512 points are scaled to the 400x300 image.
    assert out.result[0].sets[0].to_pixels(400, 300)[0] == [(93, 46), (31, 17)]


def test_the_ui_output_carries_the_points_the_node_used():
    """The widget draws the run's points from ``ui["p3s_points"]``: KJ points replace image 1's, marked as such."""
    out = points_node.P3SPointsNode.execute(
        points=POINTS, image=torch.zeros(1, 300, 400, 3), kj_positive=KJ_PIXELS, kj_width=512, kj_height=512
    )
    (sent,) = out.ui["p3s_points"]
    assert json.loads(json.dumps(sent)) == sent
    assert sent["kj"] == ["positive"]
    expected = core.selection.points.parse_kj_points(KJ_PIXELS, "positive", (512, 512))
    assert [tuple(p) for p in sent["images"][0]["positive"]] == list(expected)
    assert sent["images"] == out.result[0].to_dict()["images"]
    plain = points_node.P3SPointsNode.execute(points=POINTS).ui["p3s_points"]
    assert plain == [{"version": 1, "images": [{"positive": [[0.5, 0.5]], "negative": []}], "kj": []}]


def test_attention_words_on_a_chunk_boundary_are_found():
    """A 3-chunk prompt: ComfyUI's SD1.5 tokenizer cuts it at any token, so a word can straddle chunks.

    "dog" is one token, "zebrafish" two; a chunk holds 75 of the prompt's tokens between its start
    and end tokens, so each "zebrafish" below begins in one chunk and ends in the next."""
    clip = TokenizerClip()
    prompt = " ".join(["dog"] * 74 + ["zebrafish"] + ["dog"] * 73 + ["zebrafish"] + ["dog"] * 5)
    chunks = glue.prompt_token_chunks(clip, prompt)
    assert len(chunks) == 3 and all(len(c) == 77 for c in chunks)
    assert len(glue.word_token_ids(clip, "zebrafish")) == 2
    (group,) = glue.word_groups(clip, prompt, ["zebrafish"])
    assert group.columns == (75, 78, 152, 155), "last column of a chunk, first after the next start token"
    flat = [t for chunk in chunks for t in chunk]
    assert core.inspection.tokens.find_sequence(flat, glue.word_token_ids(clip, "zebrafish")) == [], (
        "joined chunks miss it"
    )
    with torch.inference_mode():
        _, recorder = attention.P3SAttentionMaps.execute(
            tiny_sd15_patcher(seed=0), clip, prompt, "zebrafish, dog", "output_11", "mean", 8
        ).result
    assert recorder.labels == ["zebrafish", "dog"]
    assert len(recorder.settings.groups[1].columns) == 74 + 73 + 5
    # Fine-tune's attention_word uses the same lookup.
    assert finetune._word_groups(clip, prompt, " zebrafish ") == (group,)


def test_p3s_points_is_not_an_output_node():
    assert points_node.P3SPointsNode.GET_SCHEMA().is_output_node is False


def test_api_users_see_the_error_type_by_its_name():
    """ComfyUI's ``execution.full_type_name`` shows ``module.QualName`` unless the module is
    ``builtins`` (the host test checks ``exception_type`` in ``/history`` on the real server)."""
    assert (P3SInputError.__module__, P3SInputError.__qualname__) == ("builtins", "P3SInputError")
    assert issubclass(P3SInputError, ValueError)
    try:
        raise P3SInputError("x")
    except core.errors.P3SInputError as caught:
        assert str(caught) == "x"
