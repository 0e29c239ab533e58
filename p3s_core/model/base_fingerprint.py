"""A cheap fingerprint of the base U-Net a P3S model was trained on (our addition).

A v2 P3S file stores only what the model owns; its shared weights are the base's, so it only
makes sense on the same base. The fingerprint reads a fixed sample: 8 tensors picked at fixed
positions of the sorted state-dict keys, the first 4096 values of each, as float64. From each
it keeps 3 statistics (mean, mean absolute value, and a fixed +-1-weighted mean). Those 24
numbers are the *signature*; two bases match when every number agrees within a tolerance that
storage in fp16 or bf16 and any device do not exceed (bf16 keeps ~3 significant digits; means
of 4096 values are steadier still). The printable fingerprint is a short hash of the signature
rounded to 2 significant digits, for messages and metadata.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

import torch

SAMPLED_TENSORS = 8
SAMPLED_VALUES = 4096
RELATIVE_TOLERANCE = 2e-2
ABSOLUTE_TOLERANCE = 1e-4


def base_signature(state: Mapping[str, torch.Tensor]) -> list[float]:
    """The 24 numbers that identify a base U-Net's weights (see the module docstring)."""
    keys = sorted(k for k, v in state.items() if v.is_floating_point() and v.numel() > 0)
    if not keys:
        return []
    picked = [keys[(i * len(keys)) // SAMPLED_TENSORS] for i in range(SAMPLED_TENSORS)]
    signature = []
    for key in picked:
        values = state[key].detach().reshape(-1)[:SAMPLED_VALUES].to("cpu", torch.float64)
        signs = torch.ones_like(values)
        signs[1::2] = -1.0
        signature += [float(values.mean()), float(values.abs().mean()), float((values * signs).mean())]
    return signature


def fingerprint(signature: Sequence[float]) -> str:
    """A short printable name of a signature (16 hex digits)."""
    rounded = [float(f"{value:.2g}") for value in signature]
    return hashlib.sha256(json.dumps(rounded).encode()).hexdigest()[:16]


def signatures_match(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether two signatures describe the same base (within fp16/bf16 storage error)."""
    if len(a) != len(b) or not a:
        return False
    pairs = zip(a, b, strict=True)
    return all(abs(x - y) <= ABSOLUTE_TOLERANCE + RELATIVE_TOLERANCE * max(abs(x), abs(y)) for x, y in pairs)
