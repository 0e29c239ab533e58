"""The RNGR mask (eq. 1-2) on constructed patch tokens whose answer is known."""

import math

import numpy as np
import pytest
import torch

from p3s_core.errors import P3SInputError
from p3s_core.selection.letterbox import Letterbox
from p3s_core.selection.points import make_points
from p3s_core.selection.rngr_mask import (
    RngrSettings,
    dilate,
    grid_masks,
    keep_components_with_seeds,
    otsu_threshold,
    reduce_negative,
    rngr_masks,
    similarity_map,
)

G = 16


def tokens_from_labels(labels: np.ndarray, position_weight: float = 0.35) -> torch.Tensor:
    """Patch tokens = one-hot content label + a smooth position code (as CLIP tokens carry both)."""
    g = labels.shape[0]
    content = torch.nn.functional.one_hot(torch.from_numpy(labels).long(), num_classes=8).float()
    rows, cols = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
    freqs = [math.pi / g, 2 * math.pi / g]
    codes = []
    for f in freqs:
        codes += [torch.sin(rows * f), torch.cos(rows * f), torch.sin(cols * f), torch.cos(cols * f)]
    position = torch.stack(codes, dim=-1) * position_weight
    return torch.cat([content, position], dim=-1)


def two_subjects() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Background 0 with two identical subjects (label 1): A on the left, B on the right."""
    labels = np.zeros((G, G), dtype=np.int64)
    a = np.zeros((G, G), dtype=bool)
    b = np.zeros((G, G), dtype=bool)
    a[5:10, 1:5] = True
    b[5:10, 11:15] = True
    labels[a | b] = 1
    return labels, a, b


def test_positive_on_one_twin_and_negative_on_the_other_selects_only_the_first():
    labels, a, b = two_subjects()
    masks = grid_masks(tokens_from_labels(labels), positive=[(7, 2)], negative=[(7, 12)])
    assert masks.subject[a].mean() > 0.9, "most of the selected twin is in the mask"
    assert not masks.subject[b].any(), "the look-alike is excluded"
    assert masks.subject[~(a | b)].mean() < 0.1, "little background"
    assert masks.negative[b].mean() > 0.9 and not masks.negative[a].any()


def test_literal_eq2_cannot_separate_identical_twins_but_the_gate_can():
    labels, a, b = two_subjects()
    tokens = tokens_from_labels(labels)
    literal = grid_masks(tokens, positive=[(7, 2)], negative=[(7, 12)], gate_negatives=False)
    gated = grid_masks(tokens, positive=[(7, 2)], negative=[(7, 12)])
    assert not literal.subject[b].any() and not gated.subject[b].any()
    background = ~(a | b)
    assert literal.subject[background].mean() > 0.3, "literal eq. 2 floods the background next to A"
    assert gated.subject[background].mean() < 0.1


def test_reduce_negative_is_eq2_where_the_negative_is_nearer():
    keep = np.array([0.9, 0.2, 0.5])
    remove = np.array([0.3, 0.8, 0.5])
    np.testing.assert_allclose(reduce_negative(keep, remove, gate=False), keep * (1 - remove))
    np.testing.assert_allclose(reduce_negative(keep, remove), [0.9, 0.2 * 0.2, 0.25])


def test_without_negative_points_both_twins_score_high():
    labels, a, b = two_subjects()
    masks = grid_masks(tokens_from_labels(labels), positive=[(7, 2)], negative=[])
    # Both twins are above the Otsu cut, but B is a separate component and is dropped.
    assert masks.score[b].mean() > masks.score[~(a | b)].mean() + 0.2
    assert not masks.subject[b].any()
    assert not masks.negative.any()


def test_components_not_touching_a_positive_point_are_dropped():
    binary = np.zeros((8, 8), dtype=bool)
    binary[0:2, 0:2] = True
    binary[5:8, 5:8] = True
    binary[0, 7] = True
    kept = keep_components_with_seeds(binary, [(6, 6)])
    assert kept[5:8, 5:8].all() and kept.sum() == 9
    assert keep_components_with_seeds(binary, [(4, 4)]).sum() == 0, "a seed on background keeps nothing"
    # Diagonal neighbours are connected (8-connectivity).
    diagonal = np.eye(4, dtype=bool)
    assert keep_components_with_seeds(diagonal, [(0, 0)]).sum() == 4


def test_several_positive_points_keep_several_components():
    labels = np.zeros((G, G), dtype=np.int64)
    labels[2:5, 2:5] = 1
    labels[11:14, 11:14] = 1
    masks = grid_masks(tokens_from_labels(labels), positive=[(3, 3), (12, 12)], negative=[], sigma=0.5)
    assert masks.subject[2:5, 2:5].all() and masks.subject[11:14, 11:14].all()
    one = grid_masks(tokens_from_labels(labels), positive=[(3, 3)], negative=[], sigma=0.5)
    assert not one.subject[11:14, 11:14].any()


@pytest.mark.parametrize(("low", "high", "n_low", "n_high"), [(0.1, 0.8, 300, 100), (0.3, 0.5, 50, 200)])
def test_otsu_splits_a_bimodal_map_between_its_modes(low, high, n_low, n_high):
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(low, 0.02, n_low), rng.normal(high, 0.02, n_high)])
    threshold = otsu_threshold(values)
    assert low + 0.04 < threshold < high - 0.04
    assert (values > threshold).sum() == n_high


def test_otsu_on_a_flat_map_selects_nothing():
    values = np.full((4, 4), 0.3)
    assert not (values > otsu_threshold(values)).any()


def test_similarity_map_takes_the_max_over_points_and_rescales():
    tokens = torch.zeros(2, 2, 3)
    tokens[0, 0] = torch.tensor([1.0, 0, 0])
    tokens[0, 1] = torch.tensor([0, 1.0, 0])
    tokens[1, 0] = torch.tensor([0, 0, 1.0])
    tokens[1, 1] = torch.tensor([1.0, 1.0, 0])
    single = similarity_map(tokens, [(0, 0)])
    assert single[0, 0] == pytest.approx(1.0) and single[0, 1] == pytest.approx(0.0)
    assert single[1, 1] == pytest.approx(math.sqrt(0.5))
    both = similarity_map(tokens, [(0, 0), (0, 1)])
    assert both[0, 1] == pytest.approx(1.0) and both[1, 0] == pytest.approx(0.0)
    assert not similarity_map(tokens, []).any()


def test_an_empty_subject_mask_is_a_clear_error():
    labels, _, _ = two_subjects()
    tokens = tokens_from_labels(labels).reshape(1, G * G, -1)
    same_spot = make_points([([(0.15, 0.45)], [(0.15, 0.45)])])
    with pytest.raises(P3SInputError, match="empty after Otsu"):
        rngr_masks(tokens, (G * 10, G * 10), same_spot.sets)


def test_batch_of_images_with_one_point_set_each_at_image_resolution():
    labels, _, _ = two_subjects()
    flipped = labels[:, ::-1].copy()
    tokens = torch.stack([tokens_from_labels(labels), tokens_from_labels(flipped)]).reshape(2, G * G, -1)
    height, width = 160, 160
    cell = width / G
    pos_a = ((2 + 0.5) * cell / width, (7 + 0.5) * cell / height)
    pos_b = ((12 + 0.5) * cell / width, (7 + 0.5) * cell / height)
    points = make_points([([pos_a], [pos_b]), ([pos_a], [pos_b])])  # image 2 is mirrored: B is now left
    masks = rngr_masks(tokens, (height, width), points.sets, RngrSettings(sigma=1.0, dilation=0))
    assert masks.subject.shape == (2, height, width)
    left, right = (slice(60, 90), slice(20, 40)), (slice(60, 90), slice(120, 140))
    assert masks.subject[0][left].mean() > 0.9 and masks.subject[0][right].max() == 0
    # In the mirrored image the look-alike sits under the positive point's pixel: the
    # subject is now on the left too (labels mirrored, points not), so the mask follows the points.
    assert masks.subject[1][left].mean() > 0.9 and masks.subject[1][right].max() == 0
    assert masks.negative[0][right].mean() > 0.9
    assert set(torch.unique(masks.subject).tolist()) <= {0.0, 1.0}


def test_masks_come_back_at_the_image_size_through_the_letterbox():
    labels, a, _ = two_subjects()
    tokens = tokens_from_labels(labels).reshape(1, G * G, -1)
    height, width = 90, 160  # landscape: the grid's rows 0-3 and 12-15 are padding
    box = Letterbox(height, width)
    assert (box.side, box.pad_top, box.pad_left) == (160, 35, 0)
    # Row 7 of the grid is pixel rows 70-80 of the square, image rows 35-45.
    point = ((2 + 0.5) / G, (7 + 0.5) * 10 / height - 35 / height)
    assert box.point_to_cell(point, G) == (7, 2)
    masks = rngr_masks(tokens, (height, width), make_points([([point], [])]).sets, RngrSettings(dilation=0))
    assert masks.subject.shape == (1, height, width)
    grid_subject = masks.grids[0].subject
    assert grid_subject[a].all()
    expected = box.grid_to_image(torch.from_numpy(grid_subject.astype(np.float32)), mode="nearest")
    assert (masks.subject[0] == expected).float().mean() > 0.99
    # Image rows 35..44 hold grid row 7; the mask there spans the columns of A (grown by the blur).
    assert masks.subject[0, 40, 25].item() == 1.0 and masks.subject[0, 40, 100].item() == 0.0


def test_dilation_grows_the_mask_by_the_given_pixels():
    mask = np.zeros((41, 41), dtype=bool)
    mask[20, 20] = True
    grown = dilate(mask, 5)
    assert grown[20, 15] and grown[20, 25] and grown[15, 20]
    assert not grown[20, 14] and not grown[20, 26]
    assert dilate(mask, 0).sum() == 1


def test_settings_reject_negative_values():
    with pytest.raises(P3SInputError, match="sigma"):
        RngrSettings(sigma=-1)
    with pytest.raises(P3SInputError, match="dilation"):
        RngrSettings(dilation=-2)
