"""Where a P3S model lives and in which dtype it computes, under ComfyUI's model management.

* :func:`base_compute_dtype`: the dtype the base MODEL computes in (its manual_cast dtype, the
  one ComfyUI's ModelComputeDtype sets included, else its weights' dtype; fp8 storage never
  computes in fp8).
* :func:`place_for_base`: the P3S model in that dtype on the MODEL's offload device, with its
  plain ``torch.nn`` layers turned into ComfyUI's manual_cast ops, so that ComfyUI's full,
  partial and lowvram loads can offload every layer and cast it per op (a plain ``nn`` module
  that does not fit is otherwise left on the CPU). Whatever made the P3S model (Init,
  Fine-tune, Loader), P3S Apply places it so. Any patcher ComfyUI holds loaded over it is
  unloaded first, so ComfyUI never believes a stale placement.
* :class:`P3SModelPatcher`: a plain ``ModelPatcher`` (never a dynamic one) whose size and dtype
  are read from the module each time, not cached from when it was made.
* Training: :func:`training_clone` (a non-dynamic clone on newer ComfyUI, detected by its
  ``clone(disable_dynamic=...)`` parameter), :func:`load_for_training` (as ComfyUI's own trainer
  loads: everything else offloaded, the U-Net fully loaded) and :func:`plain_ops_for_training`
  (``--fast`` ops without backward swapped for cast ops while training).
Our addition; the paper says nothing about hosts.
"""

from __future__ import annotations

import contextlib
import inspect
import weakref
from collections.abc import Iterator

import comfy.model_management
import comfy.model_patcher
import comfy.ops
import torch
from torch import nn

from ..p3s_core.errors import P3SInputError
from ..p3s_core.model.p3s_model import P3SModel

COMPUTE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_CAST_OPS = {
    nn.Linear: comfy.ops.manual_cast.Linear,
    nn.Conv2d: comfy.ops.manual_cast.Conv2d,
    nn.LayerNorm: comfy.ops.manual_cast.LayerNorm,
    nn.GroupNorm: comfy.ops.manual_cast.GroupNorm,
}


def base_compute_dtype(model: comfy.model_patcher.ModelPatcher) -> torch.dtype:
    """The dtype the base MODEL computes in (what its U-Net's inputs are cast to at sampling).

    ComfyUI's compute-dtype override (ModelComputeDtype, ``set_model_compute_dtype``) is an
    object patch of ``manual_cast_dtype`` that is written onto the model only while that clone
    is loaded: it is read through ``get_model_object``, which sees it loaded or not.
    """
    base = model.model
    dtype = _patched_attribute(model, "manual_cast_dtype") or base.get_dtype()
    if dtype in COMPUTE_DTYPES:
        return dtype
    return torch.bfloat16 if comfy.model_management.should_use_bf16(model.load_device) else torch.float16


def _patched_attribute(model: comfy.model_patcher.ModelPatcher, name: str):
    """``model.model.<name>`` with the MODEL's object patches applied (None where it has none)."""
    get = getattr(model, "get_model_object", None)
    if get is None:
        return getattr(model.model, name, None)
    try:
        return get(name)
    except AttributeError:
        return None


def castable_layers(p3s: nn.Module) -> int:
    """Turn the plain ``nn`` layers of ``p3s`` into ComfyUI's manual_cast ops (same weights); returns how many."""
    changed = 0
    for module in p3s.modules():
        op = _CAST_OPS.get(type(module))
        if op is not None:
            module.__class__ = op
            changed += 1
    return changed


def place_for_base(p3s: P3SModel, model: comfy.model_patcher.ModelPatcher) -> P3SModel:
    """``p3s`` in ``model``'s compute dtype on its offload device, every layer castable (in place)."""
    dtype = base_compute_dtype(model)
    params = list(p3s.parameters())
    moved = any(p.dtype != dtype or p.device != torch.device(model.offload_device) for p in params)
    if moved:
        unload_p3s(p3s)
    castable_layers(p3s)
    with torch.inference_mode(False):  # moved weights stay normal tensors (nodes run in inference mode)
        p3s.to(device=model.offload_device, dtype=dtype)
    return p3s


def unload_p3s(p3s: P3SModel) -> None:
    """Unload every patcher ComfyUI holds loaded over ``p3s`` (before changing it behind ComfyUI's back)."""
    loaded = comfy.model_management.current_loaded_models
    for index in range(len(loaded) - 1, -1, -1):
        patcher = loaded[index].model
        if patcher is not None and patcher.model is p3s:
            loaded[index].model_unload()
            loaded.pop(index)


def own_parameter_bytes(p3s: nn.Module, shared: nn.Module | None = None) -> int:
    """Bytes of ``p3s``'s tensors, leaving out those whose memory ``shared`` (the base U-Net) holds."""
    shared_ptrs = set()
    if shared is not None:
        shared_ptrs = {t.untyped_storage().data_ptr() for t in shared.state_dict().values() if t.device.type != "meta"}
    total = 0
    for tensor in p3s.state_dict().values():
        if tensor.device.type == "meta" or tensor.untyped_storage().data_ptr() not in shared_ptrs:
            total += tensor.nelement() * tensor.element_size()
    return total


class P3SModelPatcher(comfy.model_patcher.ModelPatcher):
    """The ``ModelPatcher`` over a P3S model: size and dtype read from the module, never cached.

    ``base_unet`` (kept as ``shared_with``): tensors it holds too are not counted, ComfyUI
    loads them with the base MODEL.
    """

    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False, **kwargs):
        super().__init__(model, load_device, offload_device, size=0, weight_inplace_update=weight_inplace_update)
        self.shared_with = kwargs.get("shared_with")

    @property
    def shared_with(self) -> nn.Module | None:
        """The base U-Net whose tensors are not counted (held weakly: it belongs to the MODEL)."""
        return self._shared_ref() if self._shared_ref is not None else None

    @shared_with.setter
    def shared_with(self, unet: nn.Module | None) -> None:
        self._shared_ref = weakref.ref(unet) if unet is not None else None

    def model_size(self) -> int:
        return own_parameter_bytes(self.model, self.shared_with)

    def model_dtype(self) -> torch.dtype:
        for param in self.model.parameters():
            if param.is_floating_point():
                return param.dtype
        return torch.float32

    def clone(self, *args, **kwargs):
        n = super().clone(*args, **kwargs)
        n.shared_with = self.shared_with
        return n


def training_clone(model: comfy.model_patcher.ModelPatcher) -> comfy.model_patcher.ModelPatcher:
    """A clone of ``model`` to train against: non-dynamic where ComfyUI loads it dynamically (newer hosts).

    A non-dynamic MODEL is cloned as it is. A dynamic one (``is_dynamic()``) is rebuilt by
    ``clone(disable_dynamic=True)``, which reads the checkpoint again through the loader that
    made it (a second copy in RAM while training; :func:`release_training_clone` frees it); a
    MODEL without such a loader is refused with what to do.
    """
    is_dynamic = getattr(model, "is_dynamic", None)
    if is_dynamic is None or not is_dynamic():
        return model.clone()
    if "disable_dynamic" not in inspect.signature(model.clone).parameters:
        return model.clone()
    if getattr(model, "cached_patcher_init", None) is None:
        raise P3SInputError(
            "This MODEL is loaded for ComfyUI's dynamic VRAM by a loader that cannot load it again in the "
            "static form training needs: load it with ComfyUI's Load Checkpoint or Load Diffusion Model node, or "
            "start ComfyUI with --disable-dynamic-vram."
        )
    return model.clone(disable_dynamic=True)


def release_training_clone(frozen: comfy.model_patcher.ModelPatcher, model: comfy.model_patcher.ModelPatcher) -> None:
    """Unload ``frozen`` where it is a model of its own (a dynamic MODEL's rebuild), not ``model``'s clone."""
    if frozen.model is model.model:
        return
    loaded = comfy.model_management.current_loaded_models
    for index in range(len(loaded) - 1, -1, -1):
        if loaded[index].model is frozen:
            loaded[index].model_unload()
            loaded.pop(index)
    comfy.model_management.soft_empty_cache()


def host_fp16_works(device: torch.device) -> bool:
    """ComfyUI's judgement whether fp16 works and is fast on ``device`` (``should_use_fp16``: no on
    GTX 16xx, where it is broken, on Pascal under Linux and on Maxwell, where it is slow)."""
    return bool(comfy.model_management.should_use_fp16(device, prioritize_performance=True))


def free_memory_for_training(model: comfy.model_patcher.ModelPatcher) -> int:
    """Free memory of ``model``'s device once :func:`load_for_training` has offloaded every other model.

    Read before training, while CLIP, CLIP vision and the VAE are still loaded from encoding the
    references: their loaded bytes on that device are counted as free (the MODEL's own are not).
    """
    device = model.load_device
    free = int(comfy.model_management.get_free_memory(device))
    for loaded in comfy.model_management.current_loaded_models:
        patcher = loaded.model
        if patcher is None or loaded.device != device or patcher is model or patcher.is_clone(model):
            continue
        free += int(loaded.model_loaded_memory())
    return free


def load_for_training(model: comfy.model_patcher.ModelPatcher) -> None:
    """Load the frozen MODEL as ComfyUI's trainer does: every other model offloaded, this one fully loaded.

    Under ``--novram`` ComfyUI turns ``force_full_load`` into a 0.1-byte lowvram budget (its check
    comes after the flag), which would stream every frozen weight per op in both passes and in
    every checkpoint recompute: the rest is then loaded through ComfyUI's ``partially_load``.
    Where that runs out of memory, the model stays as ComfyUI loaded it (slower, but it trains).
    """
    comfy.model_management.load_models_gpu([model], memory_required=1e20, force_full_load=True)
    if not getattr(model.model, "model_lowvram", False):
        return
    try:
        model.partially_load(model.load_device, extra_memory=model.model_size())
    except torch.OutOfMemoryError:
        comfy.model_management.soft_empty_cache()
        comfy.model_management.load_models_gpu([model], memory_required=1e20, force_full_load=True)


def _cast_linear_forward(module: nn.Module):
    """A ``forward`` for a Linear-like ComfyUI op through ComfyUI's own weight cast (backward-safe)."""

    def forward(input: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        weight, bias = comfy.ops.cast_bias_weight(module, input)
        scale = getattr(module, "scale_weight", None)
        if scale is not None:
            weight = weight * scale.to(device=weight.device, dtype=weight.dtype)
        return torch.nn.functional.linear(input, weight, bias)

    return forward


def _fast_linear(module: nn.Module) -> bool:
    """Linear ops whose forward may take a path without backward (fp8 matmul, cublas, scaled fp8)."""
    if not isinstance(module, torch.nn.Linear) and not hasattr(module, "layout_type"):
        return False
    if not hasattr(module, "comfy_cast_weights"):
        return False
    return type(module) not in (comfy.ops.disable_weight_init.Linear, comfy.ops.manual_cast.Linear)


@contextlib.contextmanager
def plain_ops_for_training(*modules: nn.Module) -> Iterator[int]:
    """While open, ``--fast`` Linear ops of ``modules`` (the frozen U-Net, the P3S model) compute
    through plain cast ops.

    ComfyUI's fp8 matmul (``fp8_ops``, scaled fp8 with ``fp8_matrix_mult``) and cublas ops have no
    backward; training backpropagates through the frozen U-Net and the copy, whose own layers
    (scopes ``full``, ``attention``) are copies of the base's, op class included, so those layers
    use ComfyUI's weight cast and ``F.linear`` instead. Yields the number of layers swapped;
    restored after.
    """
    layers = {id(m): m for module in modules for m in module.modules()}.values()
    swapped = [m for m in layers if _fast_linear(m) and "forward" not in vars(m)]
    for module in swapped:
        module.forward = _cast_linear_forward(module)
    try:
        yield len(swapped)
    finally:
        for module in swapped:
            vars(module).pop("forward", None)
