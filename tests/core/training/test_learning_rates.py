"""``lr`` auto: a learning rate per scope, the paper's for ``full``; an explicit rate wins."""

from __future__ import annotations

import math

import pytest

from ..p3s_support import import_pack_module

learning_rates = import_pack_module("p3s_core.training.learning_rates")
errors = import_pack_module("p3s_core.errors")
shared_copy = import_pack_module("p3s_core.model.shared_copy")


def test_auto_gives_every_scope_its_own_rate_and_full_the_papers():
    assert set(learning_rates.SCOPE_LEARNING_RATES) == set(shared_copy.SCOPES)
    for scope, rate in learning_rates.SCOPE_LEARNING_RATES.items():
        chosen, line = learning_rates.resolve_lr(learning_rates.AUTO_LR, scope)
        assert chosen == rate and line.startswith(f"lr auto -> {rate:g} for scope {scope}")
    assert learning_rates.resolve_lr(0, "full") == (1e-5, "lr auto -> 1e-05 for scope full (the paper's rate)")
    rates = learning_rates.SCOPE_LEARNING_RATES
    assert rates["attention"] >= rates["full"], "no scope trains below the paper's rate"
    assert min(rates["lora"], rates["injection"]) > rates["full"], "the small-layer scopes learn at more than 1e-5"


def test_an_explicit_rate_wins_on_every_scope():
    for scope in shared_copy.SCOPES:
        assert learning_rates.resolve_lr(2e-5, scope) == (2e-5, "lr 2e-05 (given)")


@pytest.mark.parametrize("bad", [-1e-5, math.nan, math.inf, True, "1e-5"])
def test_a_rate_that_is_neither_auto_nor_positive_is_refused_saying_what_to_give(bad):
    with pytest.raises(errors.P3SInputError, match="give 0 for auto"):
        learning_rates.check_lr_choice(bad)


def test_an_unknown_scope_is_refused():
    with pytest.raises(errors.P3SInputError, match="Training scope must be one of"):
        learning_rates.resolve_lr(0, "everything")
