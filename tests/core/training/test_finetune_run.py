"""The steps of a Fine-tune run around training: save target and plan, record, resume, scope, inputs."""

from __future__ import annotations

import pytest
import torch

from ..p3s_support import ENCODER, import_pack_module

run_steps = import_pack_module("p3s_core.training.finetune_run")
inputs = import_pack_module("p3s_core.training.finetune_inputs")
training_settings = import_pack_module("p3s_core.training.settings")
model_file = import_pack_module("p3s_core.model.model_file")
P3SInputError = import_pack_module("p3s_core.errors").P3SInputError


def history(*losses: float):
    return training_settings.TrainHistory(total=list(losses))


def record() -> dict:
    settings = training_settings.TrainSettings(epochs=4, seed=7)
    return run_steps.training_record(settings, "injection", "auto", ["a photo of sks dog"], 1, 0)


def test_training_record_holds_settings_scope_prompts_images_and_resume_epoch():
    settings = training_settings.TrainSettings(epochs=5, lr=2e-5, hint_lr_scale=3.0)
    saved = run_steps.training_record(settings, "lora", "auto", ("one", "two"), 2, 3)
    assert saved == {
        **settings.as_dict(),
        "scope": "lora",
        "scope_requested": "auto",
        "prompts": ["one", "two"],
        "images": 2,
        "resumed_from_epoch": 3,
    }
    assert list(saved) == [*settings.as_dict(), "scope_requested", "prompts", "images", "resumed_from_epoch"]
    assert saved["epochs"] == 5 and saved["hint_lr_scale"] == 3.0


def test_save_target_numbers_a_taken_name_and_needs_a_name_for_checkpoints(tmp_path):
    (tmp_path / "dog.safetensors").write_bytes(b"x")
    assert run_steps.save_target([tmp_path], "dog.safetensors", 0, False) == tmp_path / "dog_00002.safetensors"
    assert run_steps.save_target([tmp_path], "dog.safetensors", 2, True) == tmp_path / "dog.safetensors"
    assert run_steps.save_target([tmp_path], "  ", 0, False) is None
    with pytest.raises(P3SInputError, match=r"Checkpoints \(save_every\) need a save_name"):
        run_steps.save_target([tmp_path], "", 2, False)
    with pytest.raises(P3SInputError, match="outside the models folder"):
        run_steps.save_target([tmp_path], "../dog.safetensors", 0, False)


def test_save_plan_refuses_existing_checkpoints_unless_overwrite(tmp_path):
    target = tmp_path / "dog.safetensors"
    plan = run_steps.save_plan(target, 5, 2, 0, False, record())
    assert plan.checkpoints == {2: tmp_path / "dog_e0002.safetensors", 4: tmp_path / "dog_e0004.safetensors"}
    (tmp_path / "dog_e0004.safetensors").write_bytes(b"x")
    with pytest.raises(P3SInputError, match=r"Checkpoint files already exist \(.*dog_e0004.*\): enable overwrite"):
        run_steps.save_plan(target, 5, 2, 0, False, record())
    assert run_steps.save_plan(target, 5, 2, 0, True, record()).overwrite is True
    (tmp_path / "dog_e0004.safetensors").unlink()
    (tmp_path / "dog_e0002.safetensors").write_bytes(b"x")
    resumed = run_steps.save_plan(target, 5, 2, 2, False, record())
    assert list(resumed.checkpoints) == [4], "a checkpoint before the resumed epoch is not written again"
    assert run_steps.save_plan(None, 5, 0, 0, False, record()).checkpoints == {}


def test_checkpoints_carry_the_record_with_their_epoch_and_last_loss(tmp_path, p3s):
    plan = run_steps.save_plan(tmp_path / "dog.safetensors", 4, 2, 0, False, record())
    built = []

    def state():
        built.append(True)
        return training_settings.ResumeState(2, {})

    plan.save_checkpoint(1, p3s, history(0.5), state)
    assert built == [] and list(tmp_path.iterdir()) == [], "no checkpoint planned after epoch 1"
    plan.save_checkpoint(2, p3s, history(0.5, 0.25), state)
    _, info = model_file.load_p3s_model(tmp_path / "dog_e0002.safetensors")
    assert info.resume == {"epoch": 2} and info.dtype == "fp32"
    assert info.training == {**record(), "epochs": 2, "final_loss": 0.25}


def test_final_save_takes_the_next_free_name_when_the_target_appeared_meanwhile(tmp_path, p3s):
    target = tmp_path / "dog.safetensors"
    plan = run_steps.save_plan(target, 4, 0, 0, False, record())
    target.write_bytes(b"written by another run while this one trained")
    written = plan.save_final(p3s, history(0.5, 0.125))
    assert written == tmp_path / "dog_00002.safetensors"
    assert target.read_bytes().startswith(b"written by another run"), "the other file is kept"
    _, info = model_file.load_p3s_model(written)
    assert info.training == {**record(), "final_loss": 0.125} and info.resume is None
    replaced = run_steps.save_plan(target, 4, 0, 0, True, record()).save_final(p3s, history(0.5))
    assert replaced == target and model_file.load_p3s_model(target)[1].training["final_loss"] == 0.5
    assert run_steps.save_plan(None, 4, 0, 0, False, record()).save_final(p3s, history(0.5)) is None


def test_start_epoch_refuses_a_model_already_trained_for_the_epochs_asked():
    assert run_steps.start_epoch(None, 1) == 0
    assert run_steps.start_epoch(training_settings.ResumeState(3, {}), 4) == 3
    with pytest.raises(P3SInputError, match="already been trained for 3 epochs: set epochs above 3"):
        run_steps.start_epoch(training_settings.ResumeState(3, {}), 3)


def test_continued_model_copies_the_given_model_and_reads_where_it_stopped(tmp_path, p3s):
    rebuilt = []

    def rebuild(tensors, config):
        rebuilt.append((tensors, config))
        return p3s

    p3s.__dict__[run_steps.EPOCHS_DONE] = 6
    _, resume = run_steps.continued_model(p3s, rebuild)
    tensors, config = rebuilt[-1]
    assert (resume.epoch, resume.optimizer) == (6, {}) and config == p3s.config
    key = "hint_conv.weight"
    assert torch.equal(tensors[key], p3s.state_dict()[key])
    assert tensors[key].data_ptr() != p3s.state_dict()[key].data_ptr(), "a copy: the input is never trained"

    plan = run_steps.save_plan(tmp_path / "dog.safetensors", 4, 2, 0, False, record())
    plan.save_checkpoint(
        2, p3s, history(0.5), lambda: training_settings.ResumeState(2, {"hint_conv.weight.step": torch.ones(1)})
    )
    loaded = model_file.P3SModelFile(*model_file.load_p3s_model(tmp_path / "dog_e0002.safetensors"))
    _, resume = run_steps.continued_model(loaded, rebuild)
    assert resume.epoch == 2 and set(resume.optimizer) == {"hint_conv.weight.step"}
    assert not any(k.startswith("optimizer.") for k in rebuilt[-1][0])
    with pytest.raises(P3SInputError, match="must come from P3S Init, Loader or Fine-tune, not str"):
        run_steps.continued_model("a model", rebuild)


def test_continued_scope_keeps_the_models_scope_for_auto():
    settings = training_settings.TrainSettings()
    assert run_steps.continued_scope(settings, "auto", "lora") == (settings, "scope lora (of the input model)")
    changed, line = run_steps.continued_scope(settings, "injection", "lora")
    assert changed.scope == "injection" and line == "scope injection of the input model's lora copy"


def test_pick_scope_reads_free_memory_only_for_auto(base):
    data = training_settings.TrainingData(
        torch.zeros(1, 4, 5, 8), torch.zeros(1, 17, 16), torch.zeros(1, 4, 4), torch.zeros(1, 7, 32),
        torch.zeros(1, 7, 32),
    )  # fmt: skip
    settings = training_settings.TrainSettings()
    needs = run_steps.scope_needs(base, data, settings, ENCODER, 4)
    assert run_steps.pick_scope("full", None, base, data, settings, ENCODER, 4) == ("full", "scope full")
    assert run_steps.pick_scope("auto", needs["lora"], base, data, settings, ENCODER, 4)[0] == "lora"
    with pytest.raises(ValueError, match="free memory"):
        run_steps.pick_scope("auto", None, base, data, settings, ENCODER, 4)
    with pytest.raises(P3SInputError, match="scope must be one of"):
        run_steps.check_scope_choice("everything")


def test_reference_texts_and_sizes():
    assert inputs.reference_texts("a sks dog", "", "sks", 2) == ["a sks dog", "a sks dog"]
    assert inputs.reference_texts("a sks dog", " one \n\n two ", "", 2) == ["one", "two"]
    with pytest.raises(P3SInputError, match="3 captions for 2 reference images"):
        inputs.reference_texts("a sks dog", "a\nb\nc", "", 2)
    images, mask = inputs.resize_references(torch.rand(2, 60, 100, 3), torch.ones(2, 60, 100), 64)
    assert images.shape == (2, 40, 64, 3) and mask.shape == (2, 40, 64)


def test_only_the_newest_checkpoints_stay_and_the_final_file_is_kept(tmp_path, p3s):
    plan = run_steps.save_plan(tmp_path / "dog.safetensors", 10, 2, 0, False, record(), keep=2)
    state = lambda: training_settings.ResumeState(1, {})  # noqa: E731
    for epoch in range(1, 10):
        plan.save_checkpoint(epoch, p3s, history(0.5), state)
    plan.save_final(p3s, history(0.5))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dog.safetensors",
        "dog_e0006.safetensors",
        "dog_e0008.safetensors",
    ]
    every = run_steps.save_plan(tmp_path / "cat.safetensors", 7, 2, 0, False, record(), keep=0)
    for epoch in range(1, 7):
        every.save_checkpoint(epoch, p3s, history(0.5), state)
    assert len(list(tmp_path.glob("cat_e*.safetensors"))) == 3, "keep 0 keeps them all"


def test_an_older_checkpoint_stays_when_writing_the_newer_one_fails(tmp_path, p3s, monkeypatch):
    plan = run_steps.save_plan(tmp_path / "dog.safetensors", 10, 2, 0, False, record(), keep=1)
    state = lambda: training_settings.ResumeState(1, {})  # noqa: E731
    plan.save_checkpoint(2, p3s, history(0.5), state)

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(run_steps, "save_checkpoint", disk_full)
    with pytest.raises(OSError):
        plan.save_checkpoint(4, p3s, history(0.5), state)
    assert [p.name for p in tmp_path.iterdir()] == ["dog_e0002.safetensors"]


@pytest.mark.parametrize("keep", [-1, 1.5, True])
def test_keep_checkpoints_must_be_a_whole_number_from_zero(tmp_path, keep):
    with pytest.raises(P3SInputError, match="keep_checkpoints"):
        run_steps.save_plan(tmp_path / "dog.safetensors", 10, 2, 0, False, record(), keep=keep)
