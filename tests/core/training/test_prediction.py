"""The training step's input and target for eps-, v- and EDM-prediction bases
(:mod:`p3s_core.training.prediction`), held against ComfyUI's own ``model_sampling`` classes on the
discrete schedule and on a continuous EDM one (sigma_data 0.5), and used by the step."""

from __future__ import annotations

import dataclasses
import math

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


@pytest.mark.parametrize("kind", ["v", "edm"])
def test_continuous_edm_targets_are_what_comfyui_reads_back_with_its_sigma_data(kind):
    import comfy.model_sampling

    sampling_class = {"v": comfy.model_sampling.V_PREDICTION, "edm": comfy.model_sampling.EDM}[kind]
    edm = type("Sampling", (comfy.model_sampling.ModelSamplingContinuousEDM, sampling_class), {})()
    edm.set_parameters(sigma_min=0.002, sigma_max=80.0, sigma_data=0.5)  # Playground 2.5's
    gen = torch.Generator().manual_seed(3)
    x0, noise = torch.randn(3, 4, 8, 8, generator=gen), torch.randn(3, 4, 8, 8, generator=gen)
    sigma = torch.tensor([0.01, 0.5, 40.0]).view(-1, 1, 1, 1)
    noisy = x0 + sigma * noise
    given = prediction.noisy_input(x0, noise, sigma, 0.5)
    assert torch.allclose(given, edm.calculate_input(sigma, noisy))
    target = prediction.prediction_target(kind, x0, noise, sigma, 0.5)
    assert torch.allclose(edm.calculate_denoised(sigma, target, noisy), x0, atol=1e-4)
    wrong = prediction.prediction_target(kind, x0, noise, sigma)  # sigma_data 1: the discrete one's
    assert not torch.allclose(edm.calculate_denoised(sigma, wrong, noisy), x0, atol=1e-2)


def test_edm_training_sigmas_are_the_log_normal_quantiles_within_the_models_range():
    sigmas = prediction.edm_training_sigmas(0.002, 80.0)
    assert sigmas.shape == (1000,) and bool((sigmas[1:] >= sigmas[:-1]).all())
    assert float(sigmas.min()) >= 0.002 and float(sigmas.max()) <= 80.0
    assert float(sigmas.log().median()) == pytest.approx(-1.2, abs=0.01)
    assert float(sigmas.log().std()) == pytest.approx(1.2, abs=0.02)
    with pytest.raises(errors.P3SInputError, match="sigma_min < sigma_max"):
        prediction.edm_training_sigmas(1.0, 0.5)


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


def test_fine_tune_reads_the_prediction_and_noise_levels_from_the_model_and_refuses_flow(base):
    import comfy.model_sampling

    discrete = patching.check_trainable_sampling(base)
    assert (discrete.prediction, discrete.unet_timesteps, discrete.sigma_data) == ("eps", None, 1.0)
    assert torch.equal(discrete.sigmas, base.get_model_object("model_sampling").sigmas)
    vpred = base.clone()
    v_class = type("Sampling", (comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.V_PREDICTION), {})
    vpred.add_object_patch("model_sampling", v_class(base.model.model_config))
    assert patching.check_trainable_sampling(vpred).prediction == "v"
    for kind, sampling_class in (("v", comfy.model_sampling.V_PREDICTION), ("edm", comfy.model_sampling.EDM)):
        edm = base.clone()
        edm_class = type("Sampling", (comfy.model_sampling.ModelSamplingContinuousEDM, sampling_class), {})
        edm.add_object_patch("model_sampling", edm_class(base.model.model_config))
        continuous = patching.check_trainable_sampling(edm)
        assert continuous.prediction == kind
        sampling = edm.get_model_object("model_sampling")
        assert torch.allclose(continuous.unet_timesteps, sampling.timestep(continuous.sigmas))  # 0.25 ln sigma
    flow = base.clone()
    flow_class = type("Sampling", (comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST), {})
    flow.add_object_patch("model_sampling", flow_class(base.model.model_config))
    with pytest.raises(errors.P3SInputError, match="not a flow or x0 one"):
        patching.check_trainable_sampling(flow)


def test_the_step_gives_the_unet_the_models_timestep_and_scales_by_its_sigma_data(base, sigmas, p3s):
    unet = base.model.diffusion_model
    seen: list[torch.Tensor] = []
    handle = unet.register_forward_pre_hook(lambda _m, args: seen.append(args[1].clone()))
    table = prediction.edm_training_sigmas(0.002, 80.0)
    data = dataclasses.replace(
        random_training_data(images=1), prediction="edm", sigma_data=0.5, unet_timesteps=0.25 * table.log()
    )
    rows, t = torch.tensor([0]), torch.tensor([700])
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    try:
        with torch.no_grad():
            training_step.step_losses(p3s, unet, table, data, rows, noise, t, torch.zeros(1, dtype=torch.bool))
    finally:
        handle.remove()
    assert seen and all(float(s) == pytest.approx(0.25 * math.log(float(table[700])), rel=1e-5) for s in seen)
