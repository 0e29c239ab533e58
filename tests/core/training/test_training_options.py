"""Training options measured in the toy world: the training hint's source, a separate learning
rate for the zero layers and encoder, and L_ac over every cross-attention layer."""

from __future__ import annotations

import pytest
import torch

from devtools.tiny_models import tiny_sd15_patcher

from ..p3s_support import ENCODER, import_pack_module, random_training_data

patching = import_pack_module("nodes.p3s_patching")
training_loop = import_pack_module("p3s_core.training.loop")
training_settings = import_pack_module("p3s_core.training.settings")
training_step = import_pack_module("p3s_core.training.step")
losses = import_pack_module("p3s_core.training.losses")
errors = import_pack_module("p3s_core.errors")


@pytest.fixture(scope="module")
def base():
    return tiny_sd15_patcher(seed=0)


@pytest.fixture(scope="module")
def sigmas(base):
    return base.get_model_object("model_sampling").sigmas


def data(images: int = 3, seed: int = 4):
    return random_training_data(images, seed)


def new_p3s(base):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return patching.new_p3s_model(base, ENCODER)


@pytest.mark.parametrize("source", ["other", "own"])
def test_the_training_hint_comes_from_another_reference_unless_own(base, sigmas, source, monkeypatch):
    p3s, refs = new_p3s(base), data()
    seen_latents: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    encoder_forward = p3s.encoder.forward

    def spy_encoder(tokens, mask_grid, latent, latent_mask=None):
        seen_latents.append(latent.detach().clone())
        return encoder_forward(tokens, mask_grid, latent, latent_mask)

    original = training_step.step_losses

    def spy_step(p3s_, unet, sigmas_, data_, rows, *args, **kwargs):
        targets.append(data_.latents[rows].detach().clone())
        return original(p3s_, unet, sigmas_, data_, rows, *args, **kwargs)

    monkeypatch.setattr(p3s.encoder, "forward", spy_encoder)
    monkeypatch.setattr(training_loop, "step_losses", spy_step)
    settings = training_settings.TrainSettings(epochs=3, lr=1e-3, hint_source=source)
    training_loop.train_p3s(p3s, base.model.diffusion_model, sigmas, refs, settings)
    assert len(seen_latents) == len(targets) == 9
    refs_cpu = refs.latents
    for hinted, target in zip(seen_latents, targets, strict=True):
        # every hint is one of the references' latents
        assert any(torch.equal(hinted[0], r) for r in refs_cpu)
        assert torch.equal(hinted, target) == (source == "own")


def moved_by(base, sigmas, **settings) -> dict[str, float]:
    """Largest change of any tensor of each part after one epoch at lr 1e-6 and ``settings``."""
    p3s = new_p3s(base)
    before = {k: v.clone() for k, v in p3s.state_dict().items()}
    options = {"epochs": 1, "lr": 1e-6, "dropout": 0.0, "hint_lr_scale": 1.0, **settings}
    training_loop.train_p3s(p3s, base.model.diffusion_model, sigmas, data(), training_settings.TrainSettings(**options))
    after = p3s.state_dict()
    return {
        part: max(float((after[k] - before[k]).abs().max()) for k in before if k.startswith(part))
        for part in ("injection.", "copy.", "encoder.", "hint_conv.")
    }


def test_injection_lr_trains_the_zero_layers_apart_from_the_copy_and_the_hint_path(base, sigmas):
    plain, fast = moved_by(base, sigmas), moved_by(base, sigmas, injection_lr=1e-2)
    assert plain["injection."] < 1e-4
    assert fast["injection."] > 1e-3
    assert fast["copy."] < 1e-4 and fast["encoder."] < 1e-4  # the copy and the hint path keep the tiny lr


def test_the_hint_path_learns_at_lr_times_hint_lr_scale(base, sigmas):
    plain, scaled = moved_by(base, sigmas), moved_by(base, sigmas, hint_lr_scale=1e4)
    assert plain["encoder."] < 1e-4 and plain["hint_conv."] < 1e-4
    assert scaled["hint_conv."] > 1e-3 and scaled["encoder."] > 10 * max(plain["encoder."], 1e-6)
    assert scaled["copy."] < 1e-4 and scaled["injection."] < 1e-4


def test_lac_over_all_layers_is_the_mean_over_the_16_cross_attentions(base, sigmas):
    p3s, refs = new_p3s(base), data(images=1).to("cpu")
    gen = torch.Generator().manual_seed(9)
    with torch.no_grad():  # a copy that differs from the frozen U-Net, so every layer's L_ac differs from 0
        for name, param in p3s.copy.named_parameters():
            if ".attn2.to_" in name:
                param.add_(torch.randn(param.shape, generator=gen) * 0.3)
    args = (torch.randn(1, 4, 8, 8), torch.tensor([500]), torch.zeros(1, dtype=torch.bool))
    maps: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        _, l_all = training_step.step_losses(
            p3s, base.model.diffusion_model, sigmas.float(), refs, torch.tensor([0]), *args, maps=maps, lac_layers="all"
        )
        _, l_last = training_step.step_losses(
            p3s, base.model.diffusion_model, sigmas.float(), refs, torch.tensor([0]), *args
        )
    copies = sorted(k for k in maps if k.startswith("copy"))
    assert len(copies) == 16 and len([k for k in maps if k.startswith("frozen")]) == 16
    per_layer = [losses.attention_consistency_loss(maps[k], maps[k.replace("copy", "frozen", 1)]) for k in copies]
    assert min(float(v) for v in per_layer) > 0 and len({round(float(v), 9) for v in per_layer}) > 1
    assert float(l_all) == pytest.approx(float(torch.stack(per_layer).mean()), rel=1e-5)
    assert float(l_last) == pytest.approx(float(per_layer[copies.index("copy")]), rel=1e-5)


def test_bad_training_options_are_refused():
    with pytest.raises(errors.P3SInputError, match="hint_source"):
        training_settings.TrainSettings(hint_source="target")
    with pytest.raises(errors.P3SInputError, match="lac_layers"):
        training_settings.TrainSettings(lac_layers="first")
    with pytest.raises(errors.P3SInputError, match="injection_lr"):
        training_settings.TrainSettings(injection_lr=0.0)
    with pytest.raises(errors.P3SInputError, match="hint_lr_scale"):
        training_settings.TrainSettings(hint_lr_scale=0.0)
    with pytest.raises(errors.P3SInputError, match="background_loss_weight"):
        training_settings.TrainSettings(background_loss_weight=1.5)


def test_the_background_loss_weight_weighs_l_ldm_by_the_subject_mask(base, sigmas):
    p3s, refs = new_p3s(base), data(images=1)
    masks = torch.zeros(1, 8, 8)
    masks[:, 2:6, 2:6] = 1.0
    refs = training_settings.TrainingData(**{**refs.__dict__, "latent_masks": masks})
    args = (torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3)), torch.tensor([500]))
    args = (*args, torch.zeros(1, dtype=torch.bool))
    unet = base.model.diffusion_model

    def l_ldm(weight: float, data=refs) -> float:
        with torch.no_grad():
            loss, _ = training_step.step_losses(
                p3s, unet, sigmas.float(), data, torch.tensor([0]), *args, background_loss_weight=weight
            )
        return float(loss)

    plain = l_ldm(1.0)
    assert l_ldm(0.0) != pytest.approx(plain), "the weight changes the loss"
    everywhere = training_settings.TrainingData(**{**refs.__dict__, "latent_masks": torch.ones(1, 8, 8)})
    assert l_ldm(0.0, everywhere) == pytest.approx(plain), "a mask over the whole latent is the plain loss"
    without = training_settings.TrainingData(**{**refs.__dict__, "latent_masks": None})
    with pytest.raises(errors.P3SInputError, match="background_loss_weight"):
        training_loop.train_p3s(
            p3s, unet, sigmas, without, training_settings.TrainSettings(epochs=1, background_loss_weight=0.5)
        )
