"""The training loss plot: one step is drawn too."""

import numpy as np

from p3s_core.inspection.loss_plot import SERIES, plot_losses
from p3s_core.training.settings import TrainHistory


def test_a_one_step_training_shows_a_point_per_loss():
    empty = plot_losses(TrainHistory())
    one = plot_losses(TrainHistory(total=[0.5], ldm=[0.45], ac=[0.05]))
    for name, colour in SERIES:  # the legend has each colour in both plots; the curve only in one
        rgb = np.array(colour) / 255.0
        drawn = (np.abs(one - rgb).max(axis=-1) < 0.05) & ~(np.abs(empty - rgb).max(axis=-1) < 0.05)
        assert drawn.sum() >= 9, f"{name}: the single step is drawn"
        _, xs = np.nonzero(drawn)
        assert xs.min() > 200 and xs.max() < 320, "in the middle of the plot"
