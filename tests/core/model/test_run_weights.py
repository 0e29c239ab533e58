"""The per-run cast cache of the sampling path (:mod:`p3s_core.model.run_weights`)."""

from __future__ import annotations

import torch

from ..p3s_support import import_pack_module

run_weights = import_pack_module("p3s_core.model.run_weights")


def test_a_weight_is_copied_once_per_run_again_after_an_in_place_change_and_dropped_on_clear():
    cache = run_weights.RunWeights()
    weight = torch.randn(3, 3, dtype=torch.float64)
    state = torch.zeros(2, 3)
    first = cache(weight, state)
    assert first.dtype == torch.float32 and torch.equal(first, weight.float())
    assert cache(weight, state) is first, "the same run reuses the copy"
    with torch.no_grad():
        weight.add_(1.0)
    second = cache(weight, state)
    assert second is not first and torch.equal(second, weight.float()), "a changed weight is copied again"
    assert cache.held_bytes() == 9 * 4
    cache.clear()
    assert cache.held_bytes() == 0 and cache(weight, state) is not second


def test_a_weight_already_in_place_is_used_as_it_is():
    cache = run_weights.RunWeights()
    weight = torch.randn(3, 3)
    assert cache(weight, torch.zeros(1, 3)) is weight
    assert cache.held_bytes() == 0
