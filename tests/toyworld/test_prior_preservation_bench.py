"""Prior preservation's toy-world measurement, quick version (``--quick``: one pair, one seed).

The entry point's keys are what docs/toy_world.md's table is read from; the two arms must be two
different trainings (the "on" arm trains on the base's class images, the "off" arm does not).
"""

from __future__ import annotations

import pytest

from benchmarks.toy_world import prior_preservation


@pytest.fixture(scope="module")
def quick_result():
    return prior_preservation.main(["--quick", "--json"])


def test_both_arms_are_reported_per_pair_with_the_base_beside_them(quick_result):
    (pair,) = quick_result["pairs"]
    assert pair["pair"] == "yellow_diamond" and pair["class_prompt"] == "a photo of diamond"
    for arm in prior_preservation.ARMS:
        for key in ("identity", "edit_identity", "class_drift"):
            assert 0.0 <= pair[f"{arm}_{key}"] <= 1.0
            low, high = pair[f"{arm}_{key}_range"]
            assert low <= pair[f"{arm}_{key}"] <= high
    assert 0.0 <= pair["base_class_drift"] <= 1.0 and quick_result["weight"] == 1.0


def test_the_on_arm_is_another_training_than_the_off_arm(quick_result):
    (row,) = quick_result["rows"]
    scores = {arm: tuple(row[arm][k] for k in ("identity", "edit_identity", "class_drift")) for arm in ("off", "on")}
    assert scores["on"] != scores["off"], scores
