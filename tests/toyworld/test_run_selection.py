"""``python -m benchmarks.toy_world --runs``: the named runs, in order, with the runs they reuse."""

from __future__ import annotations

import pytest
import torch

from benchmarks.toy_world import runs


def test_runs_come_in_the_order_given_each_after_the_run_it_reuses():
    chosen = runs.select_runs(runs.all_runs(False), ["p3s_distractor_points", "p3s_full_sample_zero_hint"])
    assert [run.name for run in chosen] == ["p3s_distractor_points", "p3s_full", "p3s_full_sample_zero_hint"]
    assert chosen[0].references == "distractor_points" and chosen[0].group == "selectivity"


def test_an_unknown_run_is_refused_with_the_known_names():
    with pytest.raises(ValueError, match=r"Unknown run.*nope.*p3s_distractor_points"):
        runs.select_runs(runs.all_runs(False), ["nope"])


def test_seeded_runs_train_each_run_per_seed_and_reuse_their_own_seeds_model():
    chosen = runs.select_runs(runs.all_runs(False), ["base", "p3s_full_sample_zero_hint"])
    seeded = runs.seeded_runs(chosen, 2)
    assert [run.name for run in seeded] == [
        "base",
        "p3s_full@seed0",
        "p3s_full_sample_zero_hint@seed0",
        "p3s_full@seed1",
        "p3s_full_sample_zero_hint@seed1",
    ]
    assert [run.settings.get("seed") for run in seeded[1:]] == [0, 0, 1, 1]
    assert seeded[4].reuse == "p3s_full@seed1"
    assert runs.seeded_runs(chosen, 1) == chosen


def test_the_seed_summary_is_the_mean_per_run_with_identitys_range():
    rows = [
        {"run": "base", "group": "core", "identity": 0.1, "train_s": 0},
        {"run": "a@seed0", "group": "scope", "identity": 0.5, "train_s": 10},
        {"run": "a@seed1", "group": "scope", "identity": 0.9, "train_s": 20},
    ]
    summary = runs.seed_summary(rows)
    assert [row["run"] for row in summary] == ["base", "a"]
    assert summary[1]["identity"] == pytest.approx(0.7)
    assert (summary[1]["identity_min"], summary[1]["identity_max"], summary[1]["seeds"]) == (0.5, 0.9, 2)
    assert summary[1]["train_s"] == 15


def test_a_runs_model_initialisation_follows_its_seed_not_the_rows_before_it():
    from benchmarks.toy_world.base import CONTEXT_DIM, new_unet
    from benchmarks.toy_world.methods import new_p3s_model

    unet = new_unet(0, CONTEXT_DIM)
    first = new_p3s_model(unet, "injection", -1, "subject", seed=0).state_dict()
    torch.rand(1000)  # what training another row first would draw from the global stream
    again = new_p3s_model(unet, "injection", -1, "subject", seed=0).state_dict()
    other = new_p3s_model(unet, "injection", -1, "subject", seed=1).state_dict()
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not all(torch.equal(first[key], other[key]) for key in first)
