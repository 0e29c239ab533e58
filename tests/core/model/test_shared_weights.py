"""Scopes that share the base's weights: the copy's untrained layers are the frozen U-Net's own
modules (same storage, before and after training), an untrained model of every scope samples
bit-identically, a trained one changes the output, and ``lora`` trains only its factors."""

from __future__ import annotations

import pytest
import torch

from ..p3s_support import ENCODER, import_pack_module, random_training_data, randomise_injection, sample

patching = import_pack_module("nodes.p3s_patching")
training_loop = import_pack_module("p3s_core.training.loop")
training_optimiser = import_pack_module("p3s_core.training.optimiser")
training_settings = import_pack_module("p3s_core.training.settings")
shared_copy = import_pack_module("p3s_core.model.shared_copy")

SHARING_SCOPES = ("attention", "lora", "injection")


training_data = random_training_data


def storage(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


def shared_and_own(p3s, unet) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The copy pass's parameters by base name: those that are the base's, and the others."""
    base = dict(unet.named_parameters())
    shared, own = {}, {}
    for name, param in p3s.copy_module(unet).named_parameters():
        plain = name.replace(".base.", ".")
        (shared if base.get(plain) is param else own)[plain] = param
    return shared, own


def check_sharing(p3s, unet, scope: str) -> None:
    base = dict(unet.named_parameters())
    shared, own = shared_and_own(p3s, unet)
    owned_storages = {storage(p) for p in p3s.parameters()}
    for name, param in shared.items():
        assert storage(param) == storage(base[name]), name
        assert storage(param) not in owned_storages, "a shared weight is never also the model's own"
    if scope == "injection":
        assert p3s.copy_module(unet) is unet
        assert not any(k.startswith("copy.") for k in p3s.state_dict())
    elif scope == "attention":
        assert set(shared) == {n for n in base if ".attn1." not in n and ".attn2." not in n}
        assert own and all(".attn1." in n or ".attn2." in n for n in own)
        assert all(storage(p) != storage(base[n]) for n, p in own.items())
    else:  # lora: every base weight is shared, the adapters are the model's own
        assert set(shared) == set(base)
        assert own and all(".adapter.down." in n or ".adapter.up." in n for n in own)
    copy_keys = {k for k in p3s.state_dict() if k.startswith("copy.")}
    if scope == "lora":
        assert copy_keys and all(k.endswith((".down.weight", ".up.weight")) for k in copy_keys)


@pytest.mark.parametrize("scope", SHARING_SCOPES)
def test_shared_weights_are_the_frozen_unets_storage_before_and_after_training(base, scope):
    unet = base.model.diffusion_model
    p3s = patching.new_p3s_model(base, ENCODER, scope)
    check_sharing(p3s, unet, scope)
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    sigmas = base.get_model_object("model_sampling").sigmas
    training_loop.train_p3s(p3s, unet, sigmas, training_data(), training_settings.TrainSettings(epochs=2, lr=1e-3))
    check_sharing(p3s, unet, scope)
    assert all(torch.equal(v, before[k]) for k, v in unet.state_dict().items()), "the base is not trained"


def test_full_scope_owns_an_independent_copy_built_on_the_cpu(base):
    p3s = patching.new_p3s_model(base, ENCODER, "full")
    shared, own = shared_and_own(p3s, base.model.diffusion_model)
    assert not shared and len(own) == len(list(base.model.diffusion_model.parameters()))
    base_storages = {storage(p) for p in base.model.diffusion_model.parameters()}
    assert all(storage(p) not in base_storages for p in p3s.parameters())


@pytest.mark.parametrize("scope", shared_copy.SCOPES)
def test_untrained_model_of_every_scope_samples_bit_identically(base, hint, plain_output, scope):
    p3s = patching.new_p3s_model(base, ENCODER, scope)
    with torch.no_grad():  # the copy sees another input; the injections are still zero
        p3s.hint_conv.weight.normal_()
    assert torch.equal(sample(patching.apply_p3s(base, p3s, hint)), plain_output)
    randomise_injection(p3s)
    assert (sample(patching.apply_p3s(base, p3s, hint)) - plain_output).abs().max() > 1e-3
    assert torch.equal(sample(base), plain_output), "the frozen pass is untouched"


def test_lora_adapters_act_only_in_the_copys_pass(base, hint, plain_output):
    p3s = patching.new_p3s_model(base, ENCODER, "lora", lora_rank=4, lora_alpha=8.0)
    assert p3s.config["lora"] == {"rank": 4, "alpha": 8.0}
    unet = base.model.diffusion_model
    x, t, context = torch.randn(1, 4, 8, 8), torch.tensor([400.0]), torch.randn(1, 7, 32)
    copy_pass = p3s.copy_module(unet)
    with torch.no_grad():
        untrained = copy_pass(x, t, context=context)
        assert torch.equal(untrained, unet(x, t, context=context)), "zero up-projections change nothing"
        for name, param in p3s.named_parameters():
            if name.endswith(".up.weight"):
                param.normal_(std=0.05)
        adapted = copy_pass(x, t, context=context)
        frozen = unet(x, t, context=context)
    assert (adapted - frozen).abs().max() > 1e-3
    assert torch.equal(frozen, untrained), "the base's own forward never sees the adapters"
    assert torch.equal(sample(base), plain_output)


def test_training_lora_changes_only_lora_factors_and_p3s_layers(base):
    unet = base.model.diffusion_model
    p3s = patching.new_p3s_model(base, ENCODER, "lora", lora_rank=4)
    start = {k: v.clone() for k, v in p3s.state_dict().items()}
    base_before = {k: v.clone() for k, v in unet.state_dict().items()}
    sigmas = base.get_model_object("model_sampling").sigmas
    training_loop.train_p3s(
        p3s, unet, sigmas, training_data(), training_settings.TrainSettings(epochs=2, lr=1e-3, seed=1)
    )
    changed = {k for k, v in p3s.state_dict().items() if not torch.equal(v, start[k])}
    copy_changed = {k for k in changed if k.startswith("copy.")}
    assert copy_changed, "the adapters learn"
    assert all(k.endswith((".down.weight", ".up.weight")) for k in copy_changed)
    assert any(k.startswith("injection.") for k in changed) and any(k.startswith("encoder.") for k in changed)
    assert changed <= set(start)
    assert all(torch.equal(v, base_before[k]) for k, v in unet.state_dict().items())


def test_scopes_are_checked(base):
    errors = import_pack_module("p3s_core.errors")
    with pytest.raises(errors.P3SInputError, match="scope must be one of"):
        patching.new_p3s_model(base, ENCODER, "everything")
    with pytest.raises(errors.P3SInputError, match="rank must be >= 1"):
        patching.new_p3s_model(base, ENCODER, "lora", lora_rank=0)
    lora = patching.new_p3s_model(base, ENCODER, "lora")
    with pytest.raises(errors.P3SInputError, match="cannot be trained with scope 'attention'"):
        training_optimiser.trainable_parameters(lora, "attention")
