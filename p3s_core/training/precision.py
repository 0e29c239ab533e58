"""Training precision and the pieces of a training step that depend on the device.

[reconstructed] / our addition (the paper trains on one RTX 3090 and states no precision):

* A base that computes in half precision (fp16 / bf16 weights with plain ops, or fp8 storage
  cast to a half dtype) is run in that dtype, as ComfyUI runs it when sampling: inputs are
  cast to it and its weights are used as they are (no second cast of every frozen weight per
  op). The P3S modules cast their weights to the input per op. ``precision`` is then unused.
* An fp32 base runs under autocast on CUDA: ``auto`` picks bf16 where the GPU computes it
  natively (``including_emulation=False``) and fp16 otherwise (T4, V100, RTX 20: emulated
  bf16 is slower there), unless the host judges fp16 broken or slow on the card (ComfyUI's
  ``should_use_fp16``: GTX 16xx, Pascal, Maxwell), where it trains in fp32
  (:func:`precision_used`); ``bf16`` / ``fp16`` force one, ``fp32`` turns autocast off. On the
  CPU an fp32 base trains in fp32.
* fp16 trains with a ``GradScaler``; bf16 and fp32 do not need one.
* Only trained parameters are float32 (master weights); everything else keeps its dtype.
* AdamW is fused where the device supports it (one kernel per step, no foreach temporaries).
* The attention inside the U-Nets is an autograd-safe one while training
  (:func:`autograd_safe_attention`): ComfyUI's CPU default, the sub-quadratic attention,
  takes a chunked path with an in-place ``exp`` that backward rejects when memory is short.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

HALF_DTYPES = (torch.float16, torch.bfloat16)
# transformer_options key through which ComfyUI's attention wrapper (``wrap_attn``) lets a
# caller replace the attention function.
ATTENTION_OVERRIDE_KEY = "optimized_attention_override"


@dataclass(frozen=True)
class TrainingPrecision:
    """How a training forward computes.

    ``compute``: dtype the U-Nets' inputs are cast to (None = left in float32);
    ``autocast``: autocast dtype (None = no autocast); ``scaled``: train with a GradScaler.
    """

    compute: torch.dtype | None
    autocast: torch.dtype | None
    scaled: bool

    def context(self, device: torch.device):
        """The autocast context of a forward pass (a no-op without autocast)."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(device).type, dtype=self.autocast)

    def scaler(self, device: torch.device) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler(torch.device(device).type) if self.scaled else None

    def inputs(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` in the compute dtype (unchanged without one)."""
        return tensor if self.compute is None else tensor.to(self.compute)


def native_bf16(device: torch.device) -> bool:
    """Whether CUDA ``device`` computes bf16 natively (without emulation)."""
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch before 2.3 has no emulation flag; native bf16 starts with Ampere (sm 8.0)
        return torch.cuda.get_device_capability(device)[0] >= 8


def _fp16_assumed(_device: torch.device) -> bool:
    return True


def precision_used(
    precision: str,
    device: torch.device,
    base_dtype: torch.dtype,
    bf16_supported: Callable[[torch.device], bool] = native_bf16,
    fp16_supported: Callable[[torch.device], bool] = _fp16_assumed,
) -> str:
    """``fp32``, ``bf16`` or ``fp16``: what a training step on ``device`` computes in, ``precision`` asked.

    ``fp16_supported(device)``: whether fp16 works and is fast there (the host's judgement: ComfyUI
    knows cards where it is broken or slower than fp32, GTX 16xx, Pascal, Maxwell); ``auto``
    trains an fp32 base in fp32 on those instead of fp16 autocast.
    """
    device = torch.device(device)
    if base_dtype in HALF_DTYPES:
        return "bf16" if base_dtype == torch.bfloat16 else "fp16"
    if device.type != "cuda" or precision == "fp32":
        return "fp32"
    if precision in ("bf16", "fp16"):
        return precision
    if bf16_supported(device):
        return "bf16"
    return "fp16" if fp16_supported(device) else "fp32"


def training_precision(
    precision: str,
    device: torch.device,
    base_dtype: torch.dtype,
    bf16_supported: Callable[[torch.device], bool] = native_bf16,
    fp16_supported: Callable[[torch.device], bool] = _fp16_assumed,
) -> TrainingPrecision:
    """The precision of a training step on ``device`` beside a base computing in ``base_dtype``."""
    if base_dtype in HALF_DTYPES:
        return TrainingPrecision(base_dtype, None, base_dtype == torch.float16)
    used = precision_used(precision, device, base_dtype, bf16_supported, fp16_supported)
    if used == "fp32":
        return TrainingPrecision(None, None, False)
    if used == "bf16":
        return TrainingPrecision(None, torch.bfloat16, False)
    return TrainingPrecision(None, torch.float16, True)


def make_optimizer(params: Iterable, lr: float) -> torch.optim.Optimizer:
    """AdamW, fused where every parameter's device supports it, else the single-tensor loop.

    ``params``: parameters, or AdamW parameter groups (dicts with ``params`` and their ``lr``).

    The single-tensor loop (``foreach=False``) avoids the foreach path's temporaries, one
    per parameter group, that would otherwise sit beside the gradients at the step's peak.
    """
    params = list(params)
    flat = [p for item in params for p in (item["params"] if isinstance(item, dict) else [item])]
    devices = {p.device.type for p in flat}
    if devices and devices <= {"cuda", "cpu", "xpu", "mps"} and all(p.dtype == torch.float32 for p in flat):
        try:
            return torch.optim.AdamW(params, lr=lr, fused=True)
        except (RuntimeError, TypeError, ValueError):
            pass
    return torch.optim.AdamW(params, lr=lr, foreach=False)


def autograd_safe_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    mask: torch.Tensor | None = None,
    attn_precision=None,
    skip_reshape: bool = False,
    skip_output_reshape: bool = False,
    **_kwargs,
) -> torch.Tensor:
    """Attention with ComfyUI's ``optimized_attention`` signature through ``scaled_dot_product_attention``.

    ``q, k, v``: ``[B, N, H*d]`` (or ``[B, H, N, d]`` with ``skip_reshape``); returns ``[B, N, H*d]``
    (or ``[B, H, N, d]`` with ``skip_output_reshape``). Nothing in place, so backward works.
    """
    if skip_reshape:
        b, _, _, d = q.shape
        qh, kh, vh = q, k, v
    else:
        b, _, inner = q.shape
        d = inner // heads
        qh, kh, vh = (t.view(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    if mask is not None:
        if mask.dim() == 2:
            mask = mask.unsqueeze(0)
        if mask.dim() == 3:
            mask = mask.unsqueeze(1)
    out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask)
    if skip_output_reshape:
        return out
    return out.transpose(1, 2).reshape(b, -1, heads * d)


def attention_override(_default: Callable, *args, **kwargs) -> torch.Tensor:
    """ComfyUI's ``optimized_attention_override`` form of :func:`autograd_safe_attention`."""
    kwargs.pop("_inside_attn_wrapper", None)
    kwargs.pop("transformer_options", None)
    return autograd_safe_attention(*args, **kwargs)


@contextlib.contextmanager
def casting_weights(model: torch.nn.Module) -> Iterator[None]:
    """Every ComfyUI op in ``model`` casts its weights to the input per op while open.

    ComfyUI's ops (``comfy.ops``) take the flag ``comfy_cast_weights``; plain ``torch.nn``
    modules do not have it and are left alone (the P3S code casts their weights itself).
    """
    ops = [m for m in model.modules() if hasattr(m, "comfy_cast_weights")]
    saved = [vars(m).get("comfy_cast_weights", _UNSET) for m in ops]
    for m in ops:
        m.comfy_cast_weights = True
    try:
        yield
    finally:
        for m, value in zip(ops, saved, strict=True):
            if value is _UNSET:
                vars(m).pop("comfy_cast_weights", None)
            else:
                m.comfy_cast_weights = value


_UNSET = object()


def unet_compute_dtype(unet: torch.nn.Module) -> torch.dtype:
    """The dtype a U-Net computes in, judged from its weights (fp8 storage computes in bf16)."""
    for param in unet.parameters():
        if param.is_floating_point():
            return param.dtype if param.dtype in (torch.float32, torch.float16, torch.bfloat16) else torch.bfloat16
    return torch.float32
