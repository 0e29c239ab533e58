"""The two-subject benchmark's quick run: its JSON keys, readings that are shares, and regions that
act: without them both subjects' injections cover the whole image, with them each half gets only
its own, so the readings must differ.

``python -m benchmarks.toy_world.two_subjects --quick --json`` on the quick base: one training
seed, short training, few samples. The figures of docs/toy_world.md come from the full run.
"""

from __future__ import annotations

import pytest

from benchmarks.toy_world import two_subjects

ARMS = ("no_regions", "regions", "regions_feathered")
KEYS = {"identity_a", "identity_b", "leak"}


@pytest.fixture(scope="module")
def quick_result():
    return two_subjects.main(["--quick", "--json"])


def test_the_result_has_every_arm_with_the_keys_others_read(quick_result):
    assert quick_result["seeds"] == 1 and quick_result["quick"]
    assert set(quick_result["single"]) >= {"identity_a", "identity_b"}
    for arm in ARMS:
        assert set(quick_result[arm]) >= KEYS, (arm, KEYS - set(quick_result[arm]))
        for key in KEYS:
            assert 0.0 <= quick_result[arm][key] <= 1.0, (arm, key)
            low, high = quick_result[arm][f"{key}_range"]
            assert low <= quick_result[arm][key] <= high
    assert set(quick_result["holds"]) == set(ARMS)
    assert len(quick_result["seed_rows"]) == 1


def test_regions_change_what_each_half_shows(quick_result):
    row = quick_result["seed_rows"][0]
    readings = [tuple(row[arm][k] for k in ("identity_a", "identity_b", "leak_colour")) for arm in ARMS]
    assert readings[0] != readings[1], "regions must change the samples"
