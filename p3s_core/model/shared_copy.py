"""The trainable copy of the U-Net per scope, sharing every weight it does not train (our addition).

The paper's copy is a whole second U-Net [stated]. Only the parts a scope trains need to be
the copy's own; everything else can be the frozen U-Net's own modules, so their weights cost
nothing twice, in memory or on the GPU. Sharing is done at the level of *modules*, not
tensors, because ComfyUI replaces parameter objects when it patches weights, moves modules
with ``.to`` and casts weights per op through hooks on the modules in low-VRAM mode:

* ``full`` [stated]: a whole own U-Net, built from a CPU state dict of the base (never a deep
  copy of the live, possibly GPU-loaded or low-VRAM-hooked module's tensors).
* ``attention``: a *shadow* of the base U-Net, a tree of shallow container copies whose leaf
  modules are the base's module objects, except the attention modules (``attn1``/``attn2``),
  which are the copy's own.
* ``lora`` (our addition): the same shadow, whose linear and convolution leaves are wrapped:
  the base's module runs unchanged and a low-rank adapter (``up(down(x)) * alpha / rank``,
  ``up`` zero-initialised) adds to its output, only inside the copy's pass, so the frozen
  pass never sees it.
* ``injection``: no copy at all; the copy's pass is the base's own U-Net run on the hinted
  input with the copy's fresh options (it equals the frozen U-Net while nothing of it trains).

The shadow is rebuilt for whichever base U-Net is being sampled (cached per base), so it is
always the modules ComfyUI has loaded. The copy's own modules live in a sparse module tree
whose names are the U-Net's own (``copy.<path>``), which keeps state-dict keys stable.
"""

from __future__ import annotations

import copy as copylib
from collections.abc import Iterator, Mapping

import torch
from torch import nn

from ..bases.unet_sites import ATTENTIONS
from ..errors import P3SInputError

SCOPES = ("full", "attention", "lora", "injection")
"""Richest (most own weights) first."""
DEFAULT_LORA_RANK = 32
DEFAULT_LORA_ALPHA = 32.0


def check_scope(scope: str) -> str:
    """``scope`` if known, else a :class:`P3SInputError` naming the choices."""
    if scope not in SCOPES:
        raise P3SInputError(f"P3S model scope must be one of {SCOPES}, not {scope!r}.")
    return scope


def _cpu_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A normal (non-inference) CPU tensor of ``tensor``'s values, its own memory."""
    with torch.inference_mode(False):
        return tensor.detach().to("cpu", copy=True).clone()


def fresh_module(
    module: nn.Module, state: Mapping[str, torch.Tensor], prefix: str = "", dtype: torch.dtype | None = None
) -> nn.Module:
    """A new module of ``module``'s structure whose tensors are CPU copies of ``state``.

    ``state`` maps ``prefix + name`` to the base's own (unpatched) values; the live tensors of
    ``module`` (maybe on the GPU, maybe LoRA-merged) are never copied: the deep copy is told to
    use the new tensors in their place. ComfyUI's low-VRAM hooks and what its loaders attach to a
    loaded module (newer hosts' dynamic-VRAM arena handles and pinned buffers) are left behind. Floating-point
    weights take ``dtype`` (default: the base module's).
    """
    memo: dict[int, object] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        key = prefix + name
        if key not in state:
            raise P3SInputError(f"The base U-Net's weights have no {key!r}: is it the U-Net of this MODEL?")
        value = state[key]
        if tuple(value.shape) != tuple(param.shape):
            raise P3SInputError(f"{key!r} has shape {tuple(value.shape)}, the base U-Net's {tuple(param.shape)}.")
        memo[id(param)] = nn.Parameter(_cpu_copy(value).to(dtype or param.dtype), requires_grad=True)
    for name, buffer in module.named_buffers(remove_duplicate=False):
        memo[id(buffer)] = _cpu_copy(state.get(prefix + name, buffer))
    for sub in module.modules():
        for attr in ("weight_function", "bias_function"):
            hooks = sub.__dict__.get(attr)
            if hooks is not None:
                memo[id(hooks)] = []
        for attr in _loader_attributes(sub):  # never copied: native arena handles, pinned host buffers
            value = sub.__dict__[attr]
            if not isinstance(value, (bool, int, float, str, type(None))):
                memo[id(value)] = None
    with torch.inference_mode(False):
        clone = copylib.deepcopy(module, memo)
    for sub in clone.modules():
        for attr in _loader_attributes(sub):
            del sub.__dict__[attr]
        sub._forward_hooks.clear()
        sub._forward_pre_hooks.clear()
    return clone


# What ComfyUI's loaders attach to a live module while it is loaded: the dynamic-VRAM loader of
# newer hosts its arena allocation (``_v``, ``_v_signature``, ``_v_block``), pinned host buffers
# (``_pin_state``, ``_pins``), ``seed_key``, per-op LoRA functions (``*_lowvram_function``) and
# ``comfy_cast_weights`` set on the instance (with a ``prev_`` backup under lowvram, without one
# by the dynamic loader). A copy of the module is loaded by ComfyUI anew and needs none of it:
# its ops cast as their class says until then.
_LOADER_PREFIXES = ("_v", "_pin")
_LOADER_NAMES = ("seed_key", "comfy_cast_weights", "prev_comfy_cast_weights")


def _loader_attributes(module: nn.Module) -> list[str]:
    return [
        name
        for name in module.__dict__
        if name.startswith(_LOADER_PREFIXES) or name in _LOADER_NAMES or name.endswith("_lowvram_function")
    ]


def attention_paths(unet: nn.Module) -> list[str]:
    """Module paths of every ``attn1``/``attn2`` of the U-Net's transformer blocks."""
    return [name for name, _ in unet.named_modules() if name.rsplit(".", 1)[-1] in ATTENTIONS]


def lora_paths(unet: nn.Module) -> list[str]:
    """Module paths of every ``Linear`` and ``Conv2d`` leaf of the U-Net (the LoRA targets)."""
    return [name for name, m in unet.named_modules() if name and isinstance(m, (nn.Linear, nn.Conv2d))]


class LoRAAdapter(nn.Module):
    """``up(down(x)) * alpha / rank`` for one ``Linear`` or ``Conv2d`` (``up`` starts at zero).

    For a convolution, ``down`` has the base layer's kernel, stride, padding and dilation and
    ``up`` is 1x1, so the adapter's output has the base output's shape.
    """

    def __init__(self, base: nn.Module, rank: int, alpha: float):
        super().__init__()
        if isinstance(base, nn.Linear):
            self.down = nn.Linear(base.in_features, rank, bias=False)
            self.up = nn.Linear(rank, base.out_features, bias=False)
        elif isinstance(base, nn.Conv2d):
            self.down = nn.Conv2d(
                base.in_channels, rank, base.kernel_size, base.stride, base.padding, base.dilation, bias=False
            )
            self.up = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        else:
            raise P3SInputError(f"LoRA adapters fit Linear and Conv2d layers, not {type(base).__name__}.")
        nn.init.kaiming_uniform_(self.down.weight, a=5**0.5)
        nn.init.zeros_(self.up.weight)
        self.scale = float(alpha) / float(rank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.down.weight
        return (self.up(self.down(x.to(w.dtype))) * self.scale).to(x.dtype)


class _Adapted(nn.Module):
    """A base layer plus its adapter, for the copy's pass only (never registered in the P3S model)."""

    def __init__(self, base: nn.Module, adapter: LoRAAdapter):
        super().__init__()
        self.base = base
        self.adapter = adapter

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.base(x, *args, **kwargs) + self.adapter(x)


def _shadow(module: nn.Module, own: Mapping[str, nn.Module], path: str = "") -> nn.Module:
    """A shallow container copy of ``module`` whose leaves are the base's, or ``own[path]``."""
    if path in own:
        return own[path]
    if not any(key.startswith(path + "." if path else "") for key in own):
        return module  # nothing own below: share the whole subtree
    clone = copylib.copy(module)
    clone._parameters = dict(module._parameters)
    clone._buffers = dict(module._buffers)
    clone._modules = {
        name: _shadow(child, own, f"{path}.{name}" if path else name) if child is not None else None
        for name, child in module._modules.items()
    }
    return clone


def sparse_tree(modules: Mapping[str, nn.Module]) -> nn.Module:
    """A module tree holding ``modules`` at their dotted paths (``a.b.c``), empty containers between."""
    root = nn.Module()
    for path, module in modules.items():
        node = root
        *parents, leaf = path.split(".")
        for part in parents:
            if part not in node._modules:
                node.add_module(part, nn.Module())
            node = node._modules[part]
        node.add_module(leaf, module)
    return root


def tree_modules(root: nn.Module, paths: list[str]) -> Iterator[tuple[str, nn.Module]]:
    """``(path, module)`` for every path of a :func:`sparse_tree`."""
    for path in paths:
        yield path, root.get_submodule(path)


def copy_pass_module(scope: str, base: nn.Module, own: Mapping[str, nn.Module], lora: bool) -> nn.Module:
    """The module the copy's pass runs on ``base``: the base itself (``injection``) or its shadow.

    Built per call (a few milliseconds of shallow copies), never cached: a cached shadow would
    keep a replaced base's weights alive.
    """
    if scope == "injection":
        return base
    if lora:
        own = {path: _Adapted(base.get_submodule(path), adapter) for path, adapter in own.items()}
    return _shadow(base, own)
