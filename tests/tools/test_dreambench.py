"""The DreamBench run without a server: the dataset file's parsing, the checks made before any
work, the workflows it derives from the examples, the seeds and the overall table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devtools.fake_dreambench import LIVE_PROMPTS, OBJECT_PROMPTS, prompts_text, write_fake_dreambench
from p3s_batch.cli import main as batch_main
from p3s_batch.dreambench import (
    EXAMPLES_API,
    GENERATE_EXAMPLE,
    TRAIN_EXAMPLE,
    DreamBenchError,
    RunOptions,
    Settings,
    Subject,
    check_points,
    format_prompt,
    generation_workflow,
    image_seed,
    overall_row,
    parse_prompts_and_classes,
    plan,
    prepare_references,
    training_workflow,
)
from p3s_batch.items import load_workflow

# The real file's layout as published (a header line, indented list items, a trailing comma on
# the last one, a blank line inside), with prompts of our own.
REAL_LAYOUT = """Classes
subject_name,class
backpack,backpack
bear_plushie,stuffed animal
dog2,dog
cat,cat


Prompts
Object Prompts
prompt_list = [
'a {0} {1} in the jungle'.format(unique_token, class_token),
    'a cube shaped {0} {1}'.format(unique_token, class_token)
]

Live Subject Prompts
prompt_list = [
'a {0} {1} in the jungle'.format(unique_token, class_token),

'a {0} {1} wearing a red hat'.format(unique_token, class_token),
]
"""


def test_the_prompts_file_is_read_in_its_published_layout(tmp_path: Path):
    path = tmp_path / "prompts_and_classes.txt"
    path.write_text(REAL_LAYOUT)
    bench = parse_prompts_and_classes(path)
    assert bench.classes == {"backpack": "backpack", "bear_plushie": "stuffed animal", "dog2": "dog", "cat": "cat"}
    assert bench.object_prompts == ["a {0} {1} in the jungle", "a cube shaped {0} {1}"]
    assert bench.live_prompts == ["a {0} {1} in the jungle", "a {0} {1} wearing a red hat"]
    assert bench.prompts_for("dog") is bench.live_prompts and bench.prompts_for("cat") is bench.live_prompts
    assert bench.prompts_for("stuffed animal") is bench.object_prompts
    assert format_prompt("a cube shaped {0} {1}", "sks", "stuffed animal") == "a cube shaped sks stuffed animal"

    fake = tmp_path / "fake.txt"
    fake.write_text(prompts_text())
    parsed = parse_prompts_and_classes(fake)
    assert parsed.object_prompts == OBJECT_PROMPTS and parsed.live_prompts == LIVE_PROMPTS


def test_a_file_without_the_lists_is_refused(tmp_path: Path):
    path = tmp_path / "p.txt"
    path.write_text("subject_name,class\ndog,dog\n")
    with pytest.raises(DreamBenchError, match="'Object Prompts' and a 'Live Subject Prompts'"):
        parse_prompts_and_classes(path)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_fake_dreambench(tmp_path / "db")


def options(dataset: Path, tmp_path: Path, **kwargs) -> RunOptions:
    return RunOptions(dataset=dataset, out=tmp_path / "out", **kwargs)


def test_checks_before_any_work_name_what_to_fix(dataset: Path, tmp_path: Path):
    with pytest.raises(DreamBenchError, match=r"dataset folder .* not found"):
        plan(options(tmp_path / "nowhere", tmp_path))
    with pytest.raises(DreamBenchError, match=r"prompts_and_classes\.txt of your copy"):
        plan(options(dataset, tmp_path, prompts_file=tmp_path / "absent.txt"))
    with pytest.raises(
        DreamBenchError, match=r"--subjects: cat2 not in prompts_and_classes\.txt; its subjects are red_disc"
    ):
        plan(options(dataset, tmp_path, subjects=["red_disc", "cat2"]))
    with pytest.raises(DreamBenchError, match="--prompts must be 1 to 3"):
        plan(options(dataset, tmp_path, prompts=4))
    # The eval models are looked for before the first prompt: the pack's message names the folder and files.
    with pytest.raises(DreamBenchError) as missing:
        plan(options(dataset, tmp_path, eval_models=tmp_path / "p3s_eval"))
    message = str(missing.value)
    assert "models/p3s_eval" in message and "clip-vit-base-patch32.safetensors" in message
    assert str(tmp_path / "p3s_eval") in message
    with pytest.raises(DreamBenchError, match="--eval-models DIR"):
        plan(options(dataset, tmp_path))
    # The parent folder of "dataset" (a clone of google/dreambooth) is accepted too.
    with pytest.raises(DreamBenchError, match="clip-vit-base-patch32"):
        plan(options(dataset.parent, tmp_path, eval_models=tmp_path))


def test_the_command_exits_2_with_the_message(dataset: Path, tmp_path: Path, capsys):
    code = batch_main(
        ["dreambench", str(dataset), "-o", str(tmp_path / "o"), "--subjects", "nope", "--eval-models", "x"]
    )
    assert code == 2
    assert "p3s-batch dreambench: --subjects: nope not in" in capsys.readouterr().err
    assert not (tmp_path / "o").exists(), "nothing written before the checks passed"


def test_points_are_checked_per_photo_and_moved_into_the_square_crop(dataset: Path, tmp_path: Path):
    with pytest.raises(DreamBenchError, match="one entry per photo \\(2"):
        check_points("red_disc", [{"positive": [[0.5, 0.5]]}], 2)
    with pytest.raises(DreamBenchError, match="photo 2: at least one positive point"):
        check_points("red_disc", [{"positive": [[0.5, 0.5]]}, {"positive": []}], 2)
    with pytest.raises(DreamBenchError, match="x and y in \\[0, 1\\]"):
        check_points("red_disc", [{"positive": [[1.5, 0.5]]}, {"positive": [[0.5, 0.5]]}], 2)
    images = sorted((dataset / "red_disc").glob("*.jpg"))
    points = check_points("red_disc", {"images": [{"positive": [[0.5, 0.5]], "negative": [[0.45, 0.1]]}] * 2}, 2)
    reference, moved = prepare_references(Subject("red_disc", "toy", images, points), tmp_path / "s", 32)
    from PIL import Image

    with Image.open(reference) as tiff:
        assert tiff.n_frames == 2 and tiff.size == (32, 32)
    entry = json.loads(moved)["images"][0]
    # 80 x 64 photos: the square is x 8..72, so x 0.5 stays 0.5 and x 0.45 (36 px) becomes 28/64.
    assert entry["positive"] == [[0.5, 0.5]] and entry["negative"] == [[28 / 64, 0.1]]
    again, _ = prepare_references(Subject("red_disc", "toy", images, points), tmp_path / "s", 32)
    assert again == reference, "the same photos give the same file (the item's parameters stay the same)"
    outside = check_points("red_disc", [{"positive": [[0.02, 0.5]]}] * 2, 2)
    with pytest.raises(DreamBenchError, match="outside the centred square crop"):
        prepare_references(Subject("red_disc", "toy", images, outside), tmp_path / "s", 32)


def test_the_workflows_are_the_examples_trimmed_and_set():
    train_example = load_workflow(EXAMPLES_API / TRAIN_EXAMPLE)
    generate_example = load_workflow(EXAMPLES_API / GENERATE_EXAMPLE)
    settings = Settings(epochs=1, resolution=64, scope="injection", steps=2, size=64, train_seed=5, identifier="zq")
    train, node = training_workflow(train_example, settings, whole=False)
    kinds = {n["class_type"] for n in train.values()}
    assert "KSampler" not in kinds and {"P3SRngrMask", "P3SInpaint", "P3SFineTune", "SaveImage"} <= kinds
    inputs = train[node]["inputs"]
    assert (inputs["epochs"], inputs["resolution"], inputs["scope"], inputs["seed"]) == (1, 64, "injection", 5)
    assert inputs["overwrite"] is True and inputs["attention_word"] == "zq"

    whole, node = training_workflow(train_example, settings, whole=True)
    assert not {"P3SRngrMask", "P3SInpaint", "P3SPoints"} & {n["class_type"] for n in whole.values()}
    mask = whole[node]["inputs"]["subject_mask"]
    assert whole[mask[0]]["class_type"] == "SolidMask" and whole[mask[0]]["inputs"]["value"] == 1.0
    assert whole[node]["inputs"]["reference_images"] == ["1", 0], "the photos themselves, not inpainted"

    generate, ids = generation_workflow(generate_example, settings, whole=False)
    kinds = {n["class_type"] for n in generate.values()}
    assert "P3SAttentionMaps" not in kinds and "P3SLoader" in kinds
    sampler = generate[ids["sampler"]]["inputs"]
    assert sampler["steps"] == 2 and generate[sampler["model"][0]]["class_type"] == "P3SApply"
    assert generate[ids["save"]]["class_type"] == "SaveImage"


def test_seeds_do_not_depend_on_the_subset_and_the_overall_row_is_the_subject_mean():
    assert [image_seed(7, p, k) for p in (0, 1) for k in (0, 1)] == [7, 8, 107, 108]
    rows = [
        {"references": 4, "images": 2, "prompts": 2, "images_per_prompt": 1, "clip_i": 0.5, "clip_t": 0.2,
         "dino": 0.4, "clip_i_var": 0.01, "dino_var": 0.0, "train_seed": 0, "seed_base": 0, "protocol": "yes"},
        {"references": 5, "images": 2, "prompts": 2, "images_per_prompt": 1, "clip_i": 0.7, "clip_t": 0.3,
         "dino": 0.6, "clip_i_var": 0.03, "dino_var": 0.0, "train_seed": 0, "seed_base": 0, "protocol": "no"},
    ]  # fmt: skip
    total = overall_row(rows)
    assert total["subject"] == "overall" and total["images"] == 4 and total["references"] == 9
    assert total["clip_i"] == pytest.approx(0.6) and total["dino"] == pytest.approx(0.5)
    assert total["protocol"] == "no"
    # Pooled over the 4 images: the subjects' variances (mean 0.02) plus their means' spread (0.01).
    assert total["clip_i_var"] == pytest.approx(0.03) and total["dino_var"] == pytest.approx(0.01)


def test_an_item_is_known_by_its_references_content_not_the_output_path(tmp_path: Path):
    from p3s_batch.dreambench import _item

    item = _item("train", {"11.save_name": "a.safetensors"}, ("1", tmp_path / "out" / "references-0123abcd.tiff"))
    assert item.params == {"11.save_name": "a.safetensors", "@image:1.image": "references-0123abcd.tiff"}
    assert item.image_paths() == [tmp_path / "out" / "references-0123abcd.tiff"], "uploaded from its real path"
