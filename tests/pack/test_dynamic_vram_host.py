"""Newer ComfyUI (dynamic VRAM, "aimdo") emulated on ComfyUI 0.3.75.

What the newer host does, as its ``comfy/model_patcher.py`` reads: ``ModelPatcherDynamic.load``
marks every cast op of the live model with ``comfy_cast_weights = True``, ``seed_key``,
``_pin_state`` (the patcher's pinned host buffers), ``_v`` (its allocation in the VRAM arena)
and ``weight_lowvram_function``; ``clone(disable_dynamic=True)`` of a dynamic patcher rebuilds
the model through its loader (``cached_patcher_init``, the checkpoint read again from disk) and
raises a bare ``RuntimeError`` when the MODEL has no loader to rebuild from. Here the arena and
host buffers cannot be copied, as the native objects cannot.
"""

from __future__ import annotations

import pytest

from devtools.pack_modules import import_pack_module, pack_core
from devtools.tiny_models import tiny_sd15_patcher

patching = import_pack_module("nodes.p3s_patching")
placement = import_pack_module("nodes.p3s_placement")
errors = pack_core(patching).errors
ENCODER = {"token_dim": 16, "inner_dim": 16, "heads": 2}
HOST_ATTRIBUTES = ("_v", "_pin_state", "seed_key", "_v_signature", "weight_lowvram_function", "bias_lowvram_function")


class NativeHandle:
    """A VRAM-arena allocation or pinned host buffer: a native object that cannot be copied."""

    def __deepcopy__(self, memo):
        raise TypeError("cannot pickle 'HostBuffer' object")


def dynamically_loaded(patcher):
    """Mark the live model's cast ops as the newer host's dynamic load does."""
    pins = {"weights": (NativeHandle(), [], [-1], [0], [0], {}), "active": True}
    for name, module in patcher.model.diffusion_model.named_modules():
        if hasattr(module, "comfy_cast_weights") and getattr(module, "weight", None) is not None:
            module.comfy_cast_weights = True
            module.seed_key = name
            module._pin_state = pins
            module._v = (NativeHandle(), 0, module.weight.numel() * module.weight.element_size())
            module._v_signature = None
            module.weight_lowvram_function = None
            module.bias_lowvram_function = None
    return patcher


@pytest.mark.parametrize("scope", ["full", "attention"])
def test_the_copy_carries_none_of_the_dynamic_loaders_state(scope):
    base = dynamically_loaded(tiny_sd15_patcher(seed=0))
    p3s = patching.new_p3s_model(base, ENCODER, scope)
    marked = [(name, attr) for name, m in p3s.copy.named_modules() for attr in HOST_ATTRIBUTES if attr in vars(m)]
    assert marked == [], f"copied from the live model: {marked[:4]}"
    assert not any(vars(m).get("comfy_cast_weights") for m in p3s.copy.modules()), "ComfyUI's load of it decides"
    live = dict(base.model.diffusion_model.named_modules())
    own = [(n, m) for n, m in p3s.copy.named_modules() if getattr(m, "weight", None) is not None]
    assert own and all("_v" in vars(live[n]) for n, _ in own if n in live), "the base keeps its own state"


class DynamicPatcher:
    """What the newer host's ``ModelPatcherDynamic`` does on ``clone``, over a real ModelPatcher."""

    def __init__(self, inner, loader=None):
        self.inner, self.model, self.load_device = inner, inner.model, inner.load_device
        self.cached_patcher_init = loader
        self.reloads = 0

    def is_dynamic(self) -> bool:
        return True

    def clone(self, disable_dynamic=False, model_override=None, force_deepcopy=False):
        if not disable_dynamic:
            return DynamicPatcher(self.inner.clone(), self.cached_patcher_init)
        if self.cached_patcher_init is None:
            raise RuntimeError("Cannot create non-dynamic delegate: cached_patcher_init is not initialized.")
        self.reloads += 1
        return self.cached_patcher_init[0](*self.cached_patcher_init[1])


def test_training_clone_of_a_dynamic_model_without_a_loader_says_what_to_do():
    model = DynamicPatcher(tiny_sd15_patcher(seed=0), loader=None)
    with pytest.raises(errors.P3SInputError, match="--disable-dynamic-vram"):
        placement.training_clone(model)


def test_training_clone_reloads_a_dynamic_model_only_and_releases_the_reload():
    import comfy.model_management

    plain = tiny_sd15_patcher(seed=0)
    clone = placement.training_clone(plain)
    assert clone.model is plain.model, "a non-dynamic MODEL is cloned, never read again from disk"
    reloaded = []

    def loader():
        reloaded.append(tiny_sd15_patcher(seed=0))
        return reloaded[-1]

    dynamic = DynamicPatcher(tiny_sd15_patcher(seed=0), loader=(loader, ()))
    frozen = placement.training_clone(dynamic)
    assert dynamic.reloads == 1 and frozen is reloaded[0]
    placement.load_for_training(frozen)
    assert any(m.model is frozen for m in comfy.model_management.current_loaded_models)
    placement.release_training_clone(frozen, dynamic)
    assert not any(m.model is frozen for m in comfy.model_management.current_loaded_models), "its memory back"
    placement.load_for_training(clone)
    placement.release_training_clone(clone, plain)
    assert any(m.model is clone for m in comfy.model_management.current_loaded_models), "the user's MODEL stays"
