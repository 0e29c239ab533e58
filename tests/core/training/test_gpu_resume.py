"""Resuming on a GPU, checked on the CPU: the AdamW state goes where torch's fused kernel reads it
(the ``meta`` device stands in for CUDA), and the fp16 loss scale is part of the resume state."""

from __future__ import annotations

import pytest
import torch

from devtools.tiny_models import tiny_sd15_patcher

from ..p3s_support import ENCODER, import_pack_module, random_training_data

optimiser = import_pack_module("p3s_core.training.optimiser")
patching = import_pack_module("nodes.p3s_patching")
training_loop = import_pack_module("p3s_core.training.loop")
training_settings = import_pack_module("p3s_core.training.settings")
checkpoints = import_pack_module("p3s_core.training.checkpoints")
model_file = import_pack_module("p3s_core.model.model_file")
errors = import_pack_module("p3s_core.errors")


def adam_state(param: torch.nn.Parameter, step: float = 3.0) -> dict[str, torch.Tensor]:
    """Saved AdamW tensors of one parameter named ``w``, as a checkpoint holds them (CPU, float32)."""
    return {
        "w.step": torch.tensor(step),
        "w.exp_avg": torch.full(param.shape, 0.5),
        "w.exp_avg_sq": torch.full(param.shape, 0.25),
    }


def test_loaded_step_is_on_the_parameters_device_for_fused_adamw():
    """Fused (and capturable) AdamW reads ``step`` on the parameter's device; torch's own
    ``load_state_dict`` puts it there, a CPU ``step`` beside CUDA weights is an illegal access."""
    param = torch.nn.Parameter(torch.zeros(3, 2, device="meta"))
    fused = torch.optim.AdamW([param], lr=1e-3, fused=True)
    optimiser.load_optimizer_tensors(fused, adam_state(param), {"w": param})
    state = fused.state[param]
    assert state["step"].device == param.device and state["step"].dtype == torch.float32
    assert state["exp_avg"].device == param.device and state["exp_avg_sq"].device == param.device

    cpu = torch.nn.Parameter(torch.zeros(3, 2))
    plain = torch.optim.AdamW([cpu], lr=1e-3, foreach=False)
    optimiser.load_optimizer_tensors(plain, adam_state(cpu, 5.0), {"w": cpu})
    assert plain.state[cpu]["step"].device.type == "cpu" and float(plain.state[cpu]["step"]) == 5.0
    assert torch.equal(plain.state[cpu]["exp_avg"], torch.full((3, 2), 0.5))


@pytest.fixture(scope="module")
def fp16_base():
    """A tiny base stored in fp16 with plain ops, made in inference mode as ComfyUI's loader makes it:
    fp16 is ComfyUI's default on NVIDIA, so every such fine-tune trains with a GradScaler."""
    with torch.inference_mode():
        return tiny_sd15_patcher(seed=0, dtype=torch.float16)


def test_fp16_resume_restores_the_loss_scale_and_gives_the_weights_of_a_straight_run(fp16_base, tmp_path, monkeypatch):
    """2 epochs straight vs 1 epoch, a checkpoint file, and a resume. ``GradScaler("cpu")`` starts
    at 2**24 and grows every step here, so that the tiny model overflows and skips steps, as SD1.5
    does on fp16 from the default 65536 (the tiny one never overflows there)."""
    made = []

    class OverflowingScaler(torch.amp.GradScaler):
        def __init__(self, device: str = "cuda", **_kwargs):
            super().__init__(device, init_scale=2.0**24, growth_interval=1)
            made.append(self)

    monkeypatch.setattr(torch.amp, "GradScaler", OverflowingScaler)
    unet = fp16_base.model.diffusion_model
    sigmas = fp16_base.get_model_object("model_sampling").sigmas
    settings = training_settings.TrainSettings(epochs=2, lr=1e-3, seed=7)
    data = random_training_data(2, 4, 8)

    def fresh():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return patching.new_p3s_model(fp16_base, ENCODER, "injection")

    ends = {}

    def keep_end(epoch, _history, state):
        ends[epoch] = state()

    whole = fresh()
    training_loop.train_p3s(whole, unet, sigmas, data, settings, on_epoch=keep_end)
    straight = ends[2].scaler
    assert straight["scale"] == made[-1].get_scale() != 2.0**24, "the scale moved: a resume has something to restore"

    first = fresh()
    path = tmp_path / "subject_e0001.safetensors"

    def stop_after_one(epoch, _history, state):
        checkpoints.save_checkpoint(path, first, state(), {"epochs": epoch})
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training_loop.train_p3s(first, unet, sigmas, data, settings, on_epoch=stop_after_one)
    tensors, info = model_file.load_p3s_model(path)
    tensors, resume = checkpoints.resume_state_of(tensors, info)
    resumed = patching.p3s_model_from_file(fp16_base, tensors, info.config, torch.float32)
    training_loop.train_p3s(resumed, unet, sigmas, data, settings, resume=resume, on_epoch=keep_end)
    for key, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    assert resume.scaler is not None and resume.scaler["scale"] != 2.0**24, "the checkpoint kept the loss scale"
    assert ends[2].scaler == straight, "same scale and growth tracker as the straight run"


def test_a_broken_loss_scale_in_a_checkpoint_is_refused():
    scaler = torch.amp.GradScaler("cpu")
    for broken in ({"scale": 0.0, "growth_tracker": 1}, {"scale": float("inf"), "growth_tracker": 1}):
        with pytest.raises(errors.P3SInputError, match="loss scale"):
            optimiser.load_scaler_state(scaler, broken)
    optimiser.load_scaler_state(scaler, {"scale": 1024.0, "growth_tracker": 7})
    assert optimiser.scaler_state(scaler) == {"scale": 1024.0, "growth_tracker": 7}
