"""``P3S Schedule``: the injection weight over the denoising steps, with a plot of it."""

from __future__ import annotations

import torch
from comfy_api.latest import io, ui

from ..p3s_core.inspection.schedule_plot import plot_schedule
from ..p3s_core.sampling.schedule import CURVES, MAX_WEIGHT, WeightSchedule, parse_control_points_json
from .types import CATEGORY_APPLY, P3SScheduleType

PLOT_WIDTH, PLOT_HEIGHT = 512, 320


class P3SScheduleNode(io.ComfyNode):
    """Builds a :class:`WeightSchedule` from widgets and previews it as a plot."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        weight = {"min": 0.0, "max": MAX_WEIGHT, "step": 0.01}
        percent = {"min": 0.0, "max": 1.0, "step": 0.001}
        return io.Schema(
            node_id="P3SSchedule",
            display_name="P3S Schedule",
            category=CATEGORY_APPLY,
            description="How strongly the learned subject is injected at each denoising step. Progress runs "
            "from 0 (pure noise, first step) to 1 (clean image, last step). The paper weights early steps "
            "low and middle/late steps higher; its variants: constant, quadratic_up 0->1, "
            "quadratic_down 1->0.",
            inputs=[
                io.Combo.Input(
                    "curve",
                    options=list(CURVES),
                    default="constant",
                    tooltip="Shape from start_weight (first step) to end_weight (last step). constant: "
                    "start_weight throughout; linear; quadratic_up: a+(b-a)s^2, changes late; "
                    "quadratic_down: b+(a-b)(1-s)^2, changes early; cosine: smooth at both ends; custom: "
                    "through custom_points.",
                ),
                io.Float.Input("start_weight", default=1.0, **weight, tooltip="Weight at the first step (pure noise)."),
                io.Float.Input(
                    "end_weight",
                    default=1.0,
                    **weight,
                    tooltip="Weight at the last step (clean image). Not used by constant and custom.",
                ),
                io.Float.Input(
                    "strength", default=1.0, **weight, tooltip="Multiplies the whole curve; 0 turns P3S off."
                ),
                io.Float.Input(
                    "start_percent",
                    default=0.0,
                    **percent,
                    tooltip="Inject only from this progress on (0 = first step); weight is 0 before it.",
                ),
                io.Float.Input(
                    "end_percent",
                    default=1.0,
                    **percent,
                    tooltip="Inject only up to this progress (1 = last step); weight is 0 after it. Steps "
                    "with weight 0 skip the extra U-Net pass.",
                ),
                io.Int.Input(
                    "steps",
                    default=20,
                    min=1,
                    max=1000,
                    tooltip="Sampling steps shown in the plot (match your sampler); the schedule itself "
                    "adapts to any step count.",
                ),
                io.String.Input(
                    "custom_points",
                    multiline=True,
                    default="",
                    optional=True,
                    tooltip="For the custom curve only: JSON [[progress, weight], ...] with progress "
                    "strictly increasing in [0, 1], e.g. [[0, 0.2], [0.5, 1], [1, 1]]. Linear between "
                    "points, held flat before the first and after the last.",
                ),
            ],
            outputs=[
                P3SScheduleType.Output("schedule", tooltip="Connect to P3S Apply."),
                io.Image.Output("plot", tooltip="The weight at each step, the active window shaded."),
            ],
        )

    @classmethod
    def execute(
        cls,
        curve: str,
        start_weight: float,
        end_weight: float,
        strength: float,
        start_percent: float,
        end_percent: float,
        steps: int,
        custom_points: str | None = None,
    ) -> io.NodeOutput:
        points = parse_control_points_json(custom_points or "") if curve == "custom" else ()
        schedule = WeightSchedule(
            curve=curve,
            start_weight=start_weight,
            end_weight=end_weight,
            strength=strength,
            start_percent=start_percent,
            end_percent=end_percent,
            points=points,
        )
        plot = torch.from_numpy(plot_schedule(schedule, steps, PLOT_WIDTH, PLOT_HEIGHT)).unsqueeze(0)
        return io.NodeOutput(schedule, plot, ui=ui.PreviewImage(plot, cls=cls))
