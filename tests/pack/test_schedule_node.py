"""``P3S Schedule`` in-process: schema, outputs, preview, errors."""

import os

import numpy as np
import pytest
import torch

from devtools.pack_modules import import_pack_module, pack_core
from p3s_core.inspection.schedule_plot import plot_schedule
from p3s_core.sampling.schedule import WeightSchedule


@pytest.fixture(scope="module")
def node_module():
    return import_pack_module("nodes.schedule_node")


def test_schema_declares_types_category_and_tooltips(node_module):
    node = node_module.P3SScheduleNode
    schema = node.GET_SCHEMA()  # validated (unique ids...), as ComfyUI loads it
    assert schema.node_id == "P3SSchedule" and schema.category == "P3S/apply"
    inputs = node.INPUT_TYPES()
    every = {**inputs["required"], **inputs.get("optional", {})}
    assert set(every) == {
        "curve",
        "start_weight",
        "end_weight",
        "strength",
        "start_percent",
        "end_percent",
        "steps",
        "custom_points",
    }
    assert every["curve"][1]["options"] == list(pack_core(node_module).sampling.schedule.CURVES)
    assert "custom_points" in inputs["optional"]
    for name, (_, options) in every.items():
        assert options.get("tooltip"), f"{name} has no tooltip"
    assert [o.io_type for o in schema.outputs] == ["P3S_SCHEDULE", "IMAGE"]
    assert all(o.tooltip for o in schema.outputs)


def test_execute_builds_schedule_plot_and_preview(node_module, comfy_tmp_dirs):
    out = node_module.P3SScheduleNode.execute(
        curve="quadratic_up",
        start_weight=0.0,
        end_weight=1.5,
        strength=0.8,
        start_percent=0.1,
        end_percent=0.9,
        steps=12,
        custom_points="[[not json",
    )
    schedule, plot = out.args
    expected = WeightSchedule("quadratic_up", 0.0, 1.5, 0.8, 0.1, 0.9)
    assert schedule.to_dict() == expected.to_dict()  # points text ignored for a non-custom curve
    assert schedule.weights(12) == pytest.approx(expected.weights(12))
    assert isinstance(plot, torch.Tensor) and plot.shape == (1, 320, 512, 3) and plot.dtype == torch.float32
    assert np.array_equal(plot[0].numpy(), plot_schedule(expected, 12, 512, 320))
    images = out.ui.as_dict()["images"]
    assert len(images) == 1
    saved = images[0]
    assert saved["type"] == "temp"
    assert os.path.isfile(os.path.join(comfy_tmp_dirs["temp"], saved["subfolder"], saved["filename"]))


def test_custom_points_come_from_the_json_widget(node_module, comfy_tmp_dirs):
    out = node_module.P3SScheduleNode.execute(
        curve="custom",
        start_weight=1.0,
        end_weight=1.0,
        strength=2.0,
        start_percent=0.0,
        end_percent=1.0,
        steps=5,
        custom_points="[[0, 0.25], [1, 0.75]]",
    )
    assert out.args[0].weights(5) == pytest.approx([0.5, 0.75, 1.0, 1.25, 1.5])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"curve": "custom", "custom_points": ""}, "needs control points"),
        ({"curve": "custom", "custom_points": "[[0.5, 1], [0.2, 1]]"}, "sorted by progress"),
        ({"start_percent": 0.7, "end_percent": 0.3}, "window is empty"),
    ],
)
def test_bad_widgets_raise_input_errors(node_module, comfy_tmp_dirs, changes, message):
    arguments = {
        "curve": "linear",
        "start_weight": 0.0,
        "end_weight": 1.0,
        "strength": 1.0,
        "start_percent": 0.0,
        "end_percent": 1.0,
        "steps": 20,
        "custom_points": None,
    } | changes
    with pytest.raises(pack_core(node_module).errors.P3SInputError, match=message):
        node_module.P3SScheduleNode.execute(**arguments)
