"""The training step's target for eps- and v-prediction bases (:mod:`p3s_core.training.prediction`),
held against ComfyUI's own ``model_sampling`` classes, and used by the step."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from ..p3s_support import import_pack_module, random_training_data

prediction = import_pack_module("p3s_core.training.prediction")
training_step = import_pack_module("p3s_core.training.step")
patching = import_pack_module("nodes.p3s_patching")
errors = import_pack_module("p3s_core.errors")


@pytest.mark.parametrize("kind", ["eps", "v"])
def test_the_target_is_what_comfyuis_sampling_reads_back_as_the_clean_latent(kind):
    import comfy.model_sampling

    sampling_class = {"eps": comfy.model_sampling.EPS, "v": comfy.model_sampling.V_PREDICTION}[kind]
    sampling = type("Sampling", (comfy.model_sampling.ModelSamplingDiscrete, sampling_class), {})()
    gen = torch.Generator().manual_seed(3)
    x0, noise = torch.randn(3, 4, 8, 8, generator=gen), torch.randn(3, 4, 8, 8, generator=gen)
    sigma = sampling.sigmas[torch.tensor([10, 500, 990])].view(-1, 1, 1, 1)
    noisy = x0 + sigma * noise  # ComfyUI's noise_scaling for both
    assert torch.allclose(prediction.noisy_input(x0, noise, sigma), sampling.calculate_input(sigma, noisy))
    target = prediction.prediction_target(kind, x0, noise, sigma)
    assert torch.allclose(sampling.calculate_denoised(sigma, target, noisy), x0, atol=1e-4)


def test_the_step_regresses_v_on_a_v_prediction_base(base, sigmas, p3s):
    unet = base.model.diffusion_model
    rows, t = torch.tensor([0]), torch.tensor([700])
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    outputs: list[torch.Tensor] = []
    handle = unet.register_forward_hook(lambda _m, _i, out: outputs.append(out.float()))
    losses, predicted = {}, {}
    try:
        with torch.no_grad():
            for kind in ("eps", "v"):
                data = dataclasses.replace(random_training_data(images=1), prediction=kind)
                drop = torch.zeros(1, dtype=torch.bool)
                losses[kind] = training_step.step_losses(p3s, unet, sigmas.float(), data, rows, noise, t, drop)[0]
                predicted[kind] = outputs[-1]  # the frozen pass with the injections: the step's prediction
    finally:
        handle.remove()
    x0, sigma = data.latents[:1], sigmas.float()[700].view(1, 1, 1, 1)
    v = prediction.prediction_target("v", x0, noise, sigma)
    assert torch.equal(predicted["eps"], predicted["v"]), "the same input for both: only the target differs"
    assert float(losses["v"]) == pytest.approx(float(F.mse_loss(predicted["v"], v)), rel=1e-5)
    assert float(losses["eps"]) == pytest.approx(float(F.mse_loss(predicted["eps"], noise)), rel=1e-5)
    assert abs(float(losses["v"]) - float(losses["eps"])) > 1e-3


def test_an_unknown_prediction_type_is_refused_when_the_data_is_made():
    with pytest.raises(errors.P3SInputError, match="P3S trains eps, v"):
        dataclasses.replace(random_training_data(images=1), prediction="x0")


def test_fine_tune_reads_eps_and_v_prediction_from_the_model_and_refuses_edm(base):
    import comfy.model_sampling

    assert patching.check_trainable_sampling(base) == "eps"
    vpred = base.clone()
    v_class = type("Sampling", (comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.V_PREDICTION), {})
    vpred.add_object_patch("model_sampling", v_class(base.model.model_config))
    assert patching.check_trainable_sampling(vpred) == "v"
    edm = base.clone()
    edm_class = type(
        "Sampling", (comfy.model_sampling.ModelSamplingContinuousEDM, comfy.model_sampling.V_PREDICTION), {}
    )
    edm.add_object_patch("model_sampling", edm_class(base.model.model_config))
    with pytest.raises(errors.P3SInputError, match="trains eps- and v-prediction models"):
        patching.check_trainable_sampling(edm)
