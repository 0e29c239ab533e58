"""``python -m benchmarks.toy_world --runs``: the named runs, in order, with the runs they reuse."""

from __future__ import annotations

import pytest

from benchmarks.toy_world import runs


def test_runs_come_in_the_order_given_each_after_the_run_it_reuses():
    chosen = runs.select_runs(runs.all_runs(False), ["p3s_distractor_points", "p3s_full_sample_zero_hint"])
    assert [run.name for run in chosen] == ["p3s_distractor_points", "p3s_full", "p3s_full_sample_zero_hint"]
    assert chosen[0].references == "distractor_points" and chosen[0].group == "selectivity"


def test_an_unknown_run_is_refused_with_the_known_names():
    with pytest.raises(ValueError, match=r"Unknown run.*nope.*p3s_distractor_points"):
        runs.select_runs(runs.all_runs(False), ["nope"])
