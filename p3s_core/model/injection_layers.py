"""The zero-initialised injection layers: full ``C x C`` (the paper) or low-rank (our addition).

[stated] "we add the hidden states ... to the original model through a zero convolution": a
1x1 convolution over tokens, i.e. a ``Linear(C, C)``, weight and bias zero. With rank 0 a
layer is exactly that (state-dict keys ``weight``, ``bias``).

[our addition] ``injection_rank`` r > 0 makes each layer ``U(D x) * sqrt(C / r) + b`` with
``down`` ``C -> r`` (random, no bias) and ``up`` ``r -> C`` (zero weight and bias; keys
``down.weight``, ``up.weight``, ``up.bias``). The output is still exactly zero until trained,
gradients reach ``up`` from the first step (one zero factor, as in LoRA), and the 32 layers of
SD1.5 shrink from 24.8 M to 3.2 M parameters at r = 64, which is what makes an ``injection``
file a few MB. The factor ``sqrt(C / r)`` (rank-stabilised, as rsLoRA scales by
``1 / sqrt(r)``) makes an AdamW step change the layer's effective ``C x C`` weight by about as
much as a step of the full layer: without it a rank-8 layer of width 128 learned about 5x
slower. Even so a rank-r layer learns more slowly than a full one at the same learning rate
(its step moves ``W`` only within the row space of ``down``), so training gives low-rank layers
``lr * LOW_RANK_LR_SCALE`` (3, measured in the toy world: scope ``injection`` at the rank that
stands for 64 recovers the identity of full layers, docs/toy_world.md). A site whose width is
not above r keeps the full layer (it would be no smaller). ``injection_rank`` -1 (the default)
is r = 64 in every scope (:func:`resolve_injection_rank`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import P3SInputError
from .run_weights import Cast, cast_like

AUTO_INJECTION_RANK = -1
"""``injection_rank`` -1: the pack's rank, :data:`LOW_INJECTION_RANK`, in every scope."""
DEFAULT_INJECTION_RANK = AUTO_INJECTION_RANK
LOW_INJECTION_RANK = 64
MAX_INJECTION_RANK = 1280
LOW_RANK_LR_SCALE = 3.0
"""[our addition] Low-rank injection layers train at ``lr * LOW_RANK_LR_SCALE`` (see the module text)."""


class LowRankInjection(nn.Module):
    """``up.weight @ down(x) * sqrt(C / r) + up.bias``: ``down`` ``C -> r`` random, ``up`` zero."""

    def __init__(self, channels: int, rank: int):
        super().__init__()
        self.scale = math.sqrt(channels / rank)
        self.down = nn.Linear(channels, rank, bias=False)
        self.up = nn.Linear(rank, channels)
        nn.init.kaiming_uniform_(self.down.weight, a=5**0.5)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)


def check_injection_rank(rank: int) -> int:
    """``rank`` as an int in ``[-1, MAX_INJECTION_RANK]``, else a :class:`P3SInputError`."""
    if isinstance(rank, bool) or not isinstance(rank, int | float) or int(rank) != rank:
        raise P3SInputError(f"injection_rank must be a whole number, not {rank!r}.")
    if not AUTO_INJECTION_RANK <= int(rank) <= MAX_INJECTION_RANK:
        raise P3SInputError(
            f"injection_rank must be between -1 (auto), 0 (full layers) and {MAX_INJECTION_RANK}; got {int(rank)}."
        )
    return int(rank)


def resolve_injection_rank(rank: int, low_rank: int = LOW_INJECTION_RANK) -> int:
    """The rank a model gets for ``injection_rank``: -1 is ``low_rank`` (the pack's 64), else ``rank``.

    Measured in the toy world (docs/toy_world.md): over a trained copy the rank made no
    difference; in scope ``injection``, where the zero layers (with the encoder) are all the
    model learns, low-rank layers at ``lr * LOW_RANK_LR_SCALE`` matched full ones over 4 seeds.
    """
    rank = check_injection_rank(rank)
    return low_rank if rank == AUTO_INJECTION_RANK else rank


def low_rank_parameters(module: nn.Module) -> set[int]:
    """``id`` of every parameter of the :class:`LowRankInjection` layers inside ``module``."""
    return {id(p) for layer in module.modules() if isinstance(layer, LowRankInjection) for p in layer.parameters()}


def uses_low_rank(channels: int, rank: int) -> bool:
    """True when a site of ``channels`` gets a low-rank layer at ``rank``."""
    return 0 < rank < channels


def zero_injection_layer(channels: int, rank: int = 0) -> nn.Module:
    """One injection layer whose output is exactly zero: a zero ``Linear`` or a :class:`LowRankInjection`."""
    if uses_low_rank(channels, rank):
        return LowRankInjection(channels, rank)
    layer = nn.Linear(channels, channels)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def injection_parameter_count(channels: int, rank: int) -> int:
    """Parameters of one injection layer of ``channels`` at ``rank``."""
    if uses_low_rank(channels, rank):
        return 2 * channels * rank + channels
    return channels * channels + channels


def injection_delta(layer: nn.Module, state: torch.Tensor, cast: Cast = cast_like) -> torch.Tensor:
    """``layer(state)`` computed in ``state``'s dtype and device (the layer's weights cast to it by
    ``cast``: a fresh copy per call, or :class:`.run_weights.RunWeights` at sampling)."""
    if isinstance(layer, LowRankInjection):
        low = F.linear(state, cast(layer.down.weight, state))
        return F.linear(low, cast(layer.up.weight, state)) * layer.scale + cast(layer.up.bias, state)
    return F.linear(state, cast(layer.weight, state), cast(layer.bias, state))


def output_is_zero(layer: nn.Module) -> bool:
    """True while ``layer``'s output is exactly zero for every input (its output side all zero)."""
    if isinstance(layer, LowRankInjection):
        return not (layer.up.weight.any() or layer.up.bias.any())
    return not (layer.weight.any() or layer.bias.any())
