"""The learning-rate-per-scope sweep's quick run, and P3S Fine-tune's learning check on it.

``python -m benchmarks.toy_world.scope_lr --quick --json`` on the quick base: one pair, one
training seed, scopes full and injection at two rates, short training, and a no-op run (lr
1e-9). The learning check must call the no-op run one that barely moved, and a run that
learned (the higher rate: its identity beats the no-op's) one that did not.
"""

from __future__ import annotations

import pytest

from benchmarks.toy_world import scope_lr
from p3s_core.training.learning_check import LearningCheck


@pytest.fixture(scope="module")
def quick_result():
    return scope_lr.main(["--quick", "--json"])


def check_of(row: dict) -> LearningCheck:
    return LearningCheck(row["base_loss"], row["base_loss"], row["after_loss"])


def test_the_result_has_the_keys_others_read(quick_result):
    assert set(quick_result) >= {"scopes", "best_lr", "knee_lr", "best_ratio", "knee_ratio", "noop", "rows"}
    assert set(quick_result["scopes"]) == {"full", "injection"}
    assert quick_result["best_ratio"]["full"] == 1.0
    for by_lr in quick_result["scopes"].values():
        assert set(by_lr) == {"0.0001", "0.001"}
        assert all(0.0 <= v["identity"] <= 1.0 for v in by_lr.values())


def test_the_learning_check_tells_a_no_op_run_from_one_that_learned(quick_result):
    (noop_below,) = quick_result["noop"]["below_base"]
    (noop_identity,) = quick_result["noop"]["identity"]
    learned = [r for r in quick_result["rows"] if r["scope"] == "injection" and r["lr"] == 1e-3]
    (row,) = learned
    assert row["identity"] >= noop_identity + 0.2, "the run at the higher rate learned the subject"
    assert check_of(row).learned, row
    noop = LearningCheck(1.0, 1.0, 1.0 - noop_below)
    assert not noop.learned and "barely moved" in noop.line(), noop_below
