"""Parts of an API prompt that run alone (``p3s_batch.prompt_graph``, ``devtools.workflows.training_only``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devtools.workflows import training_only
from p3s_batch.prompt_graph import needed_nodes

EXAMPLES = Path(__file__).resolve().parents[2] / "example_workflows" / "api"


def _example(name: str) -> dict:
    return json.loads((EXAMPLES / f"{name}.api.json").read_text())


def test_needed_nodes_follow_links_back_and_leave_the_rest():
    prompt = {
        "1": {"class_type": "A", "inputs": {"x": 1}},
        "2": {"class_type": "B", "inputs": {"a": ["1", 0], "pair": [3, 4]}},  # [3, 4]: a list value, not a link
        "3": {"class_type": "C", "inputs": {"b": ["2", 0]}},
        "4": {"class_type": "D", "inputs": {"a": ["1", 0]}},
    }
    assert sorted(needed_nodes(prompt, ["3"])) == ["1", "2", "3"]
    assert sorted(needed_nodes(prompt, ["4", "1"])) == ["1", "4"]


def test_the_training_part_of_the_full_pipeline_trains_and_does_not_sample():
    prompt = _example("p3s_full_pipeline")
    part = training_only(prompt)
    kinds = {node["class_type"] for node in part.values()}
    assert {"P3SFineTune", "P3SRngrMask", "CheckpointLoaderSimple", "SaveImage"} <= kinds
    assert not kinds & {"KSampler", "P3SApply", "VAEDecode"}
    assert all(part[i] == prompt[i] for i in part), "nodes are kept as they are"
    with pytest.raises(ValueError, match="no P3SFineTune"):
        training_only(_example("p3s_select_subject"))
