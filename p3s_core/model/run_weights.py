"""Weights cast to the sampler's device and dtype once per sampling run (our addition).

Where ComfyUI leaves the P3S layers on the CPU (``--lowvram``, ``--novram``: the small layers are
the first it offloads), ``weight.to(state)`` would copy every injection and hint weight to the
device on every model call, a blocking copy each (about 100 per call). :class:`RunWeights` keeps
the copies for one sampling run and drops them when it ends, so the device holds them only while
sampling. Training does not use it: there the cast must stay in the autograd graph.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Cast = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cast_like(tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``tensor`` in ``like``'s device and dtype (a new copy per call; differentiable)."""
    return tensor.to(like)


class RunWeights:
    """A :data:`Cast` that copies each weight once per run: ``clear()`` ends the run.

    A copy is made again when its weight changed in place (its version counter moved), and the
    source is held with it, so that a freed weight's id cannot alias a new one.
    """

    def __init__(self) -> None:
        self._copies: dict[tuple, tuple[torch.Tensor, int, torch.Tensor]] = {}

    def __call__(self, tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if tensor.device == like.device and tensor.dtype == like.dtype:
            return tensor
        key = (id(tensor), like.device, like.dtype)
        held = self._copies.get(key)
        if held is None or held[0] is not tensor or held[1] != tensor._version:
            held = (tensor, tensor._version, tensor.detach().to(like))
            self._copies[key] = held
        return held[2]

    def held_bytes(self) -> int:
        """Bytes of the copies kept for the current run."""
        return sum(copy.numel() * copy.element_size() for _, _, copy in self._copies.values())

    def clear(self) -> None:
        """End the run: drop every copy."""
        self._copies = {}
