"""RNGR mask ("Reduce Negative, Generate Representation"), eq. 1-2 of the paper.

[stated] ``M_P[i,j] = cos(patch(p+), patch(i,j))`` and likewise ``M_N`` for the negative
point; ``Mask = Otsu(Gauss(M_P * (1 - M_N)))``, keeping only the connected components that
hold a positive point. The paper calls the mask rough and fine for fine-tuning.

[reconstructed] With several points a map takes the maximum over them; each map is
rescaled to [0, 1] before the product; the Gaussian sigma is in patches (default 1); the
16x16 mask is upsampled through the same letterbox the encoder saw and dilated (the paper's
"expanded base mask"). The negative mask used for inpainting is the mirror image,
``Otsu(Gauss(M_N * (1 - M_P)))`` kept where connected to a negative point.

[reconstructed] Gated negatives (default): the negative term only acts on patches that are
closer to a negative point than to a positive one, ``M_P * (1 - M_N * [M_N >= M_P])``. Taken
literally, eq. 2 also suppresses the selected subject by its own similarity to a look-alike:
for near-identical twins the selected twin scores ``1 - cos(twin, twin)``, no higher than the
background, and Otsu cannot separate it. The gate leaves eq. 2 unchanged wherever the negative
point is the nearer one (the look-alike and its surroundings) and without negative points;
``gate_negatives=False`` gives the literal formula.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import P3SInputError
from ..validation import in_range
from .letterbox import Letterbox
from .points import PointSet

Cell = tuple[int, int]


@dataclass(frozen=True)
class RngrSettings:
    """Parameters of the mask: Gaussian sigma in patches, dilation in pixels."""

    sigma: float = 1.0
    dilation: int = 8
    gate_negatives: bool = True

    def __post_init__(self) -> None:
        in_range("sigma", self.sigma, 0.0)
        if self.dilation < 0:
            raise P3SInputError(f"dilation must be >= 0 pixels, got {self.dilation}.")


@dataclass(frozen=True)
class GridMasks:
    """The method's result on the patch grid of one image."""

    subject: np.ndarray  # bool [g, g]
    negative: np.ndarray  # bool [g, g]
    score: np.ndarray  # float [g, g]: Gauss(M_P * (1 - M_N)), the map Otsu splits
    positive_similarity: np.ndarray  # float [g, g]: M_P
    negative_similarity: np.ndarray  # float [g, g]: M_N (zeros without negative points)


@dataclass(frozen=True)
class RngrMasks:
    """Masks at image resolution for a batch: ``[B, H, W]`` float tensors in [0, 1]."""

    subject: torch.Tensor
    negative: torch.Tensor
    score: torch.Tensor
    grids: tuple[GridMasks, ...]


def similarity_map(tokens: torch.Tensor, cells: Sequence[Cell]) -> np.ndarray:
    """Eq. 1: cosine similarity of every patch to the patches at ``cells`` (max over cells).

    ``tokens`` is ``[g, g, C]``; the result is ``[g, g]`` rescaled to [0, 1] (all zeros
    when there are no cells, or when the map is flat).
    """
    g = tokens.shape[0]
    if not cells:
        return np.zeros((g, g), dtype=np.float32)
    feats = F.normalize(tokens.detach().reshape(g * g, -1).float(), dim=-1)
    index = torch.tensor([r * g + c for r, c in cells], device=feats.device)
    sims = (feats @ feats[index].T).amax(dim=1).reshape(g, g).cpu().numpy().astype(np.float32)
    return rescale01(sims)


def rescale01(values: np.ndarray) -> np.ndarray:
    """Min-max rescale to [0, 1]; a flat map becomes all zeros."""
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-12:
        return np.zeros_like(values, dtype=np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


def gaussian_blur(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing with ``sigma`` in cells (reflecting borders); sigma 0 is a no-op."""
    if sigma <= 0:
        return values.astype(np.float32)
    radius = max(1, math.ceil(3 * sigma))
    return cv2.GaussianBlur(
        values.astype(np.float32),
        (2 * radius + 1, 2 * radius + 1),
        sigmaX=sigma,
        sigmaY=sigma,
        borderType=cv2.BORDER_REFLECT_101,
    )


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold on float values: the cut that maximises between-class variance.

    Values strictly above the returned threshold form the foreground. A flat map returns its
    value, so nothing lies above it.
    """
    flat = values.astype(np.float64).ravel()
    low, high = flat.min(), flat.max()
    if high - low < 1e-12:
        return float(high)
    hist, edges = np.histogram(flat, bins=bins, range=(low, high))
    centers = (edges[:-1] + edges[1:]) / 2
    weight0 = np.cumsum(hist)
    weight1 = weight0[-1] - weight0
    sum0 = np.cumsum(hist * centers)
    mean0 = sum0 / np.maximum(weight0, 1)
    mean1 = (sum0[-1] - sum0) / np.maximum(weight1, 1)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    between[weight1 == 0] = -1
    return float(edges[int(np.argmax(between)) + 1])


def keep_components_with_seeds(binary: np.ndarray, seeds: Sequence[Cell]) -> np.ndarray:
    """Keep the 8-connected components of ``binary`` that contain at least one seed cell."""
    count, labels = cv2.connectedComponents(binary.astype(np.uint8), connectivity=8)
    keep = {int(labels[r, c]) for r, c in seeds if binary[r, c]}
    if count <= 1 or not keep:
        return np.zeros_like(binary, dtype=bool)
    return np.isin(labels, sorted(keep))


def reduce_negative(keep: np.ndarray, remove: np.ndarray, gate: bool = True) -> np.ndarray:
    """Eq. 2's product ``keep * (1 - remove)``; gated, ``remove`` acts only where ``remove >= keep``."""
    if gate:
        remove = np.where(remove >= keep, remove, 0.0)
    return (keep * (1.0 - remove)).astype(np.float32)


def grid_masks(
    tokens: torch.Tensor,
    positive: Sequence[Cell],
    negative: Sequence[Cell],
    sigma: float = 1.0,
    gate_negatives: bool = True,
) -> GridMasks:
    """Eq. 1-2 on one ``[g, g, C]`` token grid: subject and negative masks on the grid."""
    if not positive:
        raise P3SInputError("The RNGR mask needs at least one positive point on the subject.")
    m_p = similarity_map(tokens, positive)
    m_n = similarity_map(tokens, negative)
    score = gaussian_blur(reduce_negative(m_p, m_n, gate_negatives), sigma)
    subject = keep_components_with_seeds(score > otsu_threshold(score), positive)
    if negative:
        neg_score = gaussian_blur(reduce_negative(m_n, m_p, gate_negatives), sigma)
        negative_mask = keep_components_with_seeds(neg_score > otsu_threshold(neg_score), negative)
        negative_mask &= ~subject
    else:
        negative_mask = np.zeros_like(subject)
    return GridMasks(subject, negative_mask, score, m_p, m_n)


def patch_grid(patch_tokens: torch.Tensor) -> torch.Tensor:
    """``[B, N, C]`` patch tokens (class token removed) -> ``[B, g, g, C]``; N must be square."""
    b, n, c = patch_tokens.shape
    g = math.isqrt(n)
    if g * g != n:
        raise P3SInputError(
            f"Expected a square grid of CLIP patch tokens, got {n}: pass patch tokens without the class "
            "token from a ViT image encoder (CLIP ViT-L/14 gives 256)."
        )
    return patch_tokens.reshape(b, g, g, c)


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Grow a boolean mask by ``pixels`` with an elliptical kernel."""
    if pixels <= 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def rngr_masks(
    patch_tokens: torch.Tensor,
    image_size: tuple[int, int],
    point_sets: Sequence[PointSet],
    settings: RngrSettings | None = None,
) -> RngrMasks:
    """The RNGR masks of a batch at image resolution.

    ``patch_tokens`` is ``[B, g*g, C]`` from the encoder run on :func:`letterbox_pixels` of
    the ``image_size`` = (H, W) images; ``point_sets`` holds one set per image.
    """
    settings = settings or RngrSettings()
    grid = patch_grid(patch_tokens)
    if len(point_sets) != grid.shape[0]:
        raise P3SInputError(f"{grid.shape[0]} images but {len(point_sets)} point sets: give one set per image.")
    box = Letterbox(*image_size)
    g = grid.shape[1]
    subjects, negatives, scores, grids = [], [], [], []
    for index, (tokens, points) in enumerate(zip(grid, point_sets, strict=True)):
        masks = grid_masks(
            tokens,
            [box.point_to_cell(p, g) for p in points.positive],
            [box.point_to_cell(p, g) for p in points.negative],
            settings.sigma,
            settings.gate_negatives,
        )
        if not masks.subject.any():
            raise P3SInputError(
                f"The subject mask of image {index + 1} is empty after Otsu: the positive point's patch scored "
                "below the threshold. Move the positive point onto the middle of the subject, add positive "
                "points, or move negative points that sit on or next to the subject."
            )
        grids.append(masks)
        subjects.append(_to_image(box, masks.subject, settings.dilation))
        negatives.append(_to_image(box, masks.negative, settings.dilation))
        scores.append(box.grid_to_image(torch.from_numpy(rescale01(masks.score))).clamp(0, 1))
    return RngrMasks(torch.stack(subjects), torch.stack(negatives), torch.stack(scores), tuple(grids))


def _to_image(box: Letterbox, grid_mask: np.ndarray, dilation: int) -> torch.Tensor:
    upsampled = box.grid_to_image(torch.from_numpy(grid_mask.astype(np.float32))) > 0.5
    return torch.from_numpy(dilate(upsampled.numpy(), dilation).astype(np.float32))
