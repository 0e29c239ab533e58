"""Low-rank injection layers (injection_rank): zero at start, trainable, saved and rebuilt, counted."""

from __future__ import annotations

import pytest
import torch

from ..p3s_support import ENCODER, import_pack_module, random_training_data, sample

patching = import_pack_module("nodes.p3s_patching")
layers = import_pack_module("p3s_core.model.injection_layers")
model_file = import_pack_module("p3s_core.model.model_file")
scope_memory = import_pack_module("p3s_core.training.scope_memory")
training_loop = import_pack_module("p3s_core.training.loop")
training_settings = import_pack_module("p3s_core.training.settings")
errors = import_pack_module("p3s_core.errors")

RANK = 8  # the tiny U-Net's sites are 32, 64 and 128 wide: all low-rank at 8


@pytest.fixture(scope="module")
def sigmas(base):
    return base.get_model_object("model_sampling").sigmas


def own_layer_parameters(p3s) -> int:
    return sum(p.numel() for name, p in p3s.named_parameters() if not name.startswith("copy."))


@pytest.mark.parametrize("rank", [0, RANK, 48])
def test_layers_and_keys_follow_the_rank_and_the_estimate_counts_them(base, rank):
    p3s = patching.new_p3s_model(base, ENCODER, "injection", injection_rank=rank)
    keys = set(p3s.state_dict())
    for site in p3s.sites:
        prefix = f"injection.{site.key}.attn1."
        if 0 < rank < site.channels:
            assert {prefix + k for k in ("down.weight", "up.weight", "up.bias")} <= keys
            assert prefix + "weight" not in keys
        else:
            assert {prefix + "weight", prefix + "bias"} <= keys
    assert p3s.config["injection_rank"] == rank
    unet = base.model.diffusion_model
    assert scope_memory.p3s_layer_parameters(unet, ENCODER, rank) == own_layer_parameters(p3s)


def test_low_rank_layers_are_smaller_than_full_ones(base):
    full = patching.new_p3s_model(base, ENCODER, "injection", injection_rank=0)
    low = patching.new_p3s_model(base, ENCODER, "injection", injection_rank=RANK)
    injection = lambda p3s: sum(p.numel() for p in p3s.injection.parameters())  # noqa: E731
    assert injection(low) < injection(full) / 3


def test_an_untrained_low_rank_model_samples_exactly_like_the_base(base, plain_output, hint):
    p3s = patching.new_p3s_model(base, ENCODER, "injection", injection_rank=RANK)
    downs = [layer.down.weight for site in p3s.injection.values() for layer in site.values()]
    assert all(d.abs().sum() > 0 for d in downs)  # only the up side starts at zero
    assert p3s.injection_is_zero()
    assert torch.equal(sample(patching.apply_p3s(base, p3s, hint)), plain_output)


def test_training_a_low_rank_model_moves_its_up_side_and_changes_sampling(base, sigmas, plain_output, hint):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        p3s = patching.new_p3s_model(base, ENCODER, "injection", injection_rank=RANK)
    settings = training_settings.TrainSettings(epochs=2, lr=1e-2, seed=1)
    training_loop.train_p3s(p3s, base.model.diffusion_model, sigmas, random_training_data(), settings)
    assert not p3s.injection_is_zero()
    ups = [layer.up.weight for site in p3s.injection.values() for layer in site.values()]
    assert all(u.abs().sum() > 0 for u in ups)
    assert not torch.equal(sample(patching.apply_p3s(base, p3s, hint)), plain_output)


def one_step_moves(base, sigmas, **settings) -> tuple[float, float]:
    """``(largest up-weight change, largest hint-conv change)`` after one AdamW step of a rank-8 model."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        p3s = patching.new_p3s_model(base, ENCODER, "injection", injection_rank=RANK)
    hint_before = p3s.hint_conv.weight.detach().clone()
    settings = training_settings.TrainSettings(epochs=1, lr=1e-3, seed=1, **settings)
    training_loop.train_p3s(p3s, base.model.diffusion_model, sigmas, random_training_data(images=1), settings)
    up = max(float(layer.up.weight.detach().abs().max()) for site in p3s.injection.values() for layer in site.values())
    return up, float((p3s.hint_conv.weight.detach() - hint_before).abs().max())


def test_low_rank_layers_learn_at_low_rank_lr_scale_times_the_rate(base, sigmas):
    up_default, hint_default = one_step_moves(base, sigmas)
    up_one, hint_one = one_step_moves(base, sigmas, low_rank_lr_scale=1.0)
    # AdamW's first step moves each weight by its learning rate (up starts at zero).
    assert up_one == pytest.approx(1e-3, rel=0.01)
    assert up_default == pytest.approx(1e-3 * layers.LOW_RANK_LR_SCALE, rel=0.01)
    assert hint_default == pytest.approx(hint_one, rel=1e-6)  # the hint path keeps its own rate


def test_a_bad_low_rank_lr_scale_is_refused():
    with pytest.raises(errors.P3SInputError, match="low_rank_lr_scale"):
        training_settings.TrainSettings(low_rank_lr_scale=0.0)


def test_a_low_rank_file_round_trips_and_rebuilds_the_same_output(base, hint, tmp_path):
    p3s = patching.new_p3s_model(base, ENCODER, "injection", injection_rank=RANK)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param in p3s.injection.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
    expected = sample(patching.apply_p3s(base, p3s, hint))
    path = tmp_path / "low.safetensors"
    model_file.save_p3s_model(path, p3s.state_dict(), p3s.config, dtype="fp32")
    tensors, info = model_file.load_p3s_model(path)
    loaded = patching.p3s_model_from_file(base, tensors, info.config)
    assert loaded.injection_rank == RANK
    for key, value in p3s.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert torch.equal(sample(patching.apply_p3s(base, loaded, hint)), expected)


def test_a_file_without_a_rank_rebuilds_full_layers(base):
    p3s = patching.new_p3s_model(base, ENCODER, "injection", injection_rank=0)
    config = {k: v for k, v in p3s.config.items() if k != "injection_rank"}  # files made before the option
    loaded = patching.p3s_model_from_file(base, p3s.state_dict(), config)
    assert loaded.injection_rank == 0
    assert set(loaded.state_dict()) == set(p3s.state_dict())


@pytest.mark.parametrize(("rank", "words"), [(-2, "between -1"), (5000, "between -1"), (2.5, "whole number")])
def test_a_bad_rank_is_refused_with_its_value(base, rank, words):
    with pytest.raises(errors.P3SInputError, match=words):
        patching.new_p3s_model(base, ENCODER, "injection", injection_rank=rank)


def effective_weight(layer) -> torch.Tensor:
    """The ``C x C`` matrix a layer applies (without its bias)."""
    eye = torch.eye(layer.up.weight.shape[0] if hasattr(layer, "up") else layer.weight.shape[1])
    bias = layer.up.bias if hasattr(layer, "up") else layer.bias
    return (layers.injection_delta(layer, eye) - bias).T


@pytest.mark.parametrize("rank", [4, 16])
def test_an_adamw_step_moves_a_low_rank_layer_about_as_far_as_a_full_one(rank):
    channels, gen = 128, torch.Generator().manual_seed(0)
    states, target = torch.randn(64, channels, generator=gen), torch.randn(64, channels, generator=gen)
    moved = {}
    for r in (0, rank):
        torch.manual_seed(1)
        layer = layers.zero_injection_layer(channels, r)
        before = effective_weight(layer).detach()
        optimiser = torch.optim.AdamW(layer.parameters(), lr=1e-3)
        for _ in range(3):
            optimiser.zero_grad()
            torch.nn.functional.mse_loss(layers.injection_delta(layer, states), target).backward()
            optimiser.step()
        moved[r] = float((effective_weight(layer).detach() - before).norm())
    assert 0.25 < moved[rank] / moved[0] < 4.0, moved


@pytest.mark.parametrize("scope", ["injection", "lora", "attention", "full"])
def test_the_default_rank_is_64_in_every_scope(base, scope):
    p3s = patching.new_p3s_model(base, ENCODER, scope)  # injection_rank -1 by default
    assert p3s.injection_rank == layers.LOW_INJECTION_RANK == 64 == p3s.config["injection_rank"]
    unet = base.model.diffusion_model
    assert scope_memory.p3s_layer_parameters(unet, ENCODER, -1) == own_layer_parameters(p3s)
