"""The optimiser's side of a fine-tune: what each scope trains, AdamW's groups and its saved state.

Our addition: the copy, the zero injection layers and the hint path learn at rates of their
own (:func:`parameter_groups`); the AdamW state is kept by parameter name so that a
checkpoint resumes exactly (:func:`optimizer_tensors`, :func:`load_optimizer_tensors`), and so
is an fp16 run's loss scale (:func:`scaler_state`, :func:`load_scaler_state`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..bases.unet_sites import ATTENTIONS
from ..errors import P3SInputError
from ..model.p3s_model import P3SModel
from ..model.shared_copy import SCOPES
from .settings import TrainSettings

_ADAM_KEYS = ("exp_avg", "exp_avg_sq", "step")
HINT_PATH = ("encoder.", "hint_conv.")  # the subject encoder and the hint ZeroConv


def optimizer_tensors(optimizer: torch.optim.Optimizer, names: dict[int, str]) -> dict[str, torch.Tensor]:
    """The AdamW state as CPU float32 tensors named ``<parameter>.<key>`` (``names``: id(param) -> name)."""
    tensors = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if key in _ADAM_KEYS:
                    value = torch.as_tensor(value)
                    tensors[f"{names[id(param)]}.{key}"] = value.detach().to("cpu", torch.float32, copy=True)
    return tensors


def load_optimizer_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], params: dict[str, nn.Parameter]
) -> None:
    """Put :func:`optimizer_tensors`' state back; a :class:`P3SInputError` when it does not fit.

    The state goes in through torch's own ``load_state_dict``, which places each tensor where
    the optimiser reads it: the moments on the parameter's device and dtype, ``step`` on the
    parameter's device for fused and capturable AdamW (whose kernels read it there), else on
    the CPU.
    """
    loaded = {}
    for name, param in params.items():
        state = {key: tensors.get(f"{name}.{key}") for key in _ADAM_KEYS}
        if all(value is None for value in state.values()):
            continue
        if any(value is None for value in state.values()) or state["exp_avg"].shape != param.shape:
            raise P3SInputError(
                f"The checkpoint's optimiser state does not fit parameter {name!r}: resume from a "
                "checkpoint of this model, or train it anew."
            )
        loaded[id(param)] = {key: value.detach().to(torch.float32).clone() for key, value in state.items()}
    if not loaded:
        return
    order = [id(param) for group in optimizer.param_groups for param in group["params"]]
    saved = optimizer.state_dict()
    saved["state"] = {**saved["state"], **{i: loaded[pid] for i, pid in enumerate(order) if pid in loaded}}
    optimizer.load_state_dict(saved)


def scaler_state(scaler: torch.amp.GradScaler | None) -> dict | None:
    """The part of a GradScaler's state a resume needs: its current scale and growth tracker."""
    if scaler is None:
        return None
    state = scaler.state_dict()
    if not state:  # a disabled scaler keeps nothing
        return None
    return {"scale": float(state["scale"]), "growth_tracker": int(state["_growth_tracker"])}


def load_scaler_state(scaler: torch.amp.GradScaler, saved: dict) -> None:
    """Put :func:`scaler_state`'s ``saved`` back into a fresh ``scaler`` (its growth settings kept)."""
    scale, tracker = float(saved["scale"]), int(saved["growth_tracker"])
    if not (math.isfinite(scale) and scale > 0) or tracker < 0:
        raise P3SInputError(
            f"The checkpoint's loss scale ({scale:g}, growth tracker {tracker}) is broken: resume from another "
            "checkpoint, or train anew."
        )
    scaler.load_state_dict({**scaler.state_dict(), "scale": scale, "_growth_tracker": tracker})


def trainable_parameters(p3s: P3SModel, scope: str | None = None) -> dict[str, nn.Parameter]:
    """The parameters ``scope`` trains (default: the model's own scope, i.e. all it owns), by name."""
    scope = p3s.scope if scope is None else scope
    if scope not in SCOPES:
        raise P3SInputError(f"Training scope must be one of {SCOPES}, not {scope!r}.")
    if scope != p3s.scope and not (p3s.scope == "full" and scope in ("attention", "injection")):
        raise P3SInputError(
            f"This P3S model has scope {p3s.scope!r}; it cannot be trained with scope {scope!r}. Train it with "
            f"its own scope, or start a new model with scope {scope!r}."
        )
    if scope == p3s.scope:
        return dict(p3s.named_parameters())
    chosen = {}
    for name, param in p3s.named_parameters():
        in_scope = scope == "full" or (scope == "attention" and any(f".{a}." in name for a in ATTENTIONS))
        if in_scope or not name.startswith("copy."):
            chosen[name] = param
    return chosen


def parameter_groups(trainable: dict[str, nn.Parameter], settings: TrainSettings, low_rank: set[int]) -> list[dict]:
    """AdamW groups: the copy (``lr``), the zero layers (``injection_lr``; low-rank ones, ids in
    ``low_rank``, times ``low_rank_lr_scale``), the hint path (``lr * hint_lr_scale``)."""
    hint = [p for n, p in trainable.items() if n.startswith(HINT_PATH)]
    copy = [p for n, p in trainable.items() if n.startswith("copy.")]
    rest = [p for n, p in trainable.items() if not n.startswith(("copy.", *HINT_PATH))]
    injection_lr = settings.injection_lr or settings.lr
    groups = [
        ([p for p in rest if id(p) not in low_rank], injection_lr),
        ([p for p in rest if id(p) in low_rank], injection_lr * settings.low_rank_lr_scale),
        (hint, settings.lr * settings.hint_lr_scale),
        (copy, settings.lr),
    ]
    return [{"params": params, "lr": lr} for params, lr in groups if params]
