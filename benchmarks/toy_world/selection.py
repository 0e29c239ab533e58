"""The references through the pack's selection path: P3S Points -> RNGR Mask -> P3S Inpaint.

[our addition, the benchmark's set-up] Each reference scene is rendered at 224x224 (CLIP's
input size), one positive point is put at the subject's centre and one negative point at the
look-alike's (what a user would click). The pack's own node classes then run in-process
(``execute`` of ``P3SPoints``, ``P3SRngrMask`` and ``P3SInpaint``, at their default settings):
the RNGR node encodes the letterboxed images with :class:`ClipVisionStandin` and calls
``p3s_core.selection.rngr_mask.rngr_masks``; P3S Inpaint (``telea``) erases the negative mask. The
cleaned image is area-averaged to the world's 8x8 latent (:func:`image_to_latent`, as
``world.latents`` renders) and the subject mask to the 8x8 patch grid with
``p3s_core.model.subject_encoder.mask_to_patch_grid`` (what P3S Apply does).

``python -m benchmarks.toy_world.selection [--json]`` prints :func:`selection_report`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from p3s_core.model.subject_encoder import mask_to_patch_grid
from p3s_core.selection.points import make_points

from . import world
from .subject import reference_scenes, without_distractor

RENDER_SIZE = 224
PATCH = 14
TOKEN_WIDTH = 64
REFERENCE_SEED = 3  # the seed of runs._data's reference scenes
# The nodes' defaults (nodes/rngr_mask_node.py, nodes/inpaint_node.py).
RNGR_INPUTS = {"layer": -2, "sigma": 1.0, "dilation": 8, "gate_negatives": True}
INPAINT_INPUTS = {"method": "telea", "radius": 5, "fill": 0.5}


HUE_BINS = 12
GREY_LEVELS = (0.05, 0.5, 0.95)  # the world's black, gray and white
ORIENTATIONS = 4
VALUE_LEVELS = (0.05, 0.3, 0.5, 0.75, 0.95)  # lightness bins for every pixel, chromatic or not
FILL_LEVELS = (0.5, 0.75, 1.0)  # an object's area over its box's: triangle and diamond, circle, square
ROUNDNESS_LEVELS = (0.4, 0.65, 1.0)  # its area over its circumscribed circle's: triangle, square/diamond, circle
OBJECT_FEATURES = len(FILL_LEVELS) + len(ROUNDNESS_LEVELS)
FEATURES = HUE_BINS + len(GREY_LEVELS) + 1 + ORIENTATIONS + len(VALUE_LEVELS) + OBJECT_FEATURES
STRIPE_CONTEXT = 3  # patches: the neighbourhood whose vertical light-dark changes tell stripes
SHAPE_CONTEXT = 9  # patches: the neighbourhood whose edge directions tell the object's outline
STRIPE_WEIGHT = 1.0
SHAPE_WEIGHT = 0.5
VALUE_WEIGHT = 0.4  # 0.7, or every pixel voting (not only achromatic ones), cost the shape and pattern pairs
OBJECT_WEIGHT = 0.5
FOREGROUND_DISTANCE = 0.12  # RGB distance from the background colour: darker stripes stay foreground
MIN_OBJECT_PIXELS = 64


def colour_histogram(rgb: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` in [0, 1] -> ``[B, 15, H, W]``: each pixel's soft hue bin or grey level.

    [our addition] A pixel spreads its saturation (HSV's, free of brightness) over 12 hue bins
    with a von Mises kernel, and the rest of its weight (1 - saturation) over three grey levels
    (black, gray, white) by its brightness, so that a white object differs from a gray or black
    background as it does for CLIP.
    """
    high, low = rgb.amax(dim=1), rgb.amin(dim=1)
    delta = (high - low).clamp_min(1e-6)
    r, g, b = rgb.unbind(dim=1)
    hue = torch.where(
        high == r, ((g - b) / delta) % 6, torch.where(high == g, (b - r) / delta + 2, (r - g) / delta + 4)
    )
    angle = hue * (torch.pi / 3)  # radians
    saturation = torch.where(high > 1e-3, (high - low) / high.clamp_min(1e-3), torch.zeros_like(high))
    centres = torch.arange(HUE_BINS, dtype=rgb.dtype) * (2 * torch.pi / HUE_BINS)
    kernel = torch.exp(4.0 * (torch.cos(angle.unsqueeze(1) - centres.view(1, -1, 1, 1)) - 1))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    chromatic = saturation.unsqueeze(1) * kernel
    levels = torch.tensor(GREY_LEVELS, dtype=rgb.dtype).view(1, -1, 1, 1)
    grey = torch.exp(-(((high.unsqueeze(1) - levels) / 0.2) ** 2))
    grey = grey / grey.sum(dim=1, keepdim=True)
    return torch.cat([chromatic, (1 - saturation).unsqueeze(1) * grey], dim=1)


def _context(values: torch.Tensor, patches: int) -> torch.Tensor:
    """``[B, C, h, w]`` per-patch values averaged over a ``patches`` x ``patches`` neighbourhood."""
    return F.avg_pool2d(values, patches, stride=1, padding=patches // 2, count_include_pad=False)


def patch_features(rgb: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` in [0, 1] -> ``[B, (H/14)(W/14), 25]``: per 14-px patch, its colour and context.

    [our addition] A stand-in for what CLIP's patch tokens carry: the patch's mean colour
    histogram (hue, or grey level: brightness-free for colours, so a striped object's dark and
    light stripes agree), how much the light changes from row to row in the patch's 3-patch
    neighbourhood (stripes), and the directions of the edges in its 9-patch neighbourhood (the
    outline of the object it belongs to; real patch tokens see the whole image through
    attention). The stripes weigh about as much as the colour, the edge directions half as much.
    [our addition, second pass] Beside them, at 0.4 weight: the patch's finer lightness
    histogram of its achromatic pixels (:func:`value_histogram`). A local-contrast feature (a
    patch's lightness against its 5-patch neighbourhood's) was tried and left out: the look-alike
    stands out from the background as much as the subject does, so it pulled the subject mask
    onto the look-alike (pattern pair's worst IoU 0.69 -> 0.43).
    [our addition, third pass] And at 0.5 weight, the shape of the whole object the patch lies on
    (:func:`object_shapes`): a real CLIP's deep patch tokens say which object a patch belongs to,
    so the inside of a red striped triangle differs from the inside of a red striped square.
    """
    colour = F.avg_pool2d(colour_histogram(rgb), PATCH)
    light = rgb.mean(dim=1, keepdim=True)
    rows = (light[..., 1:, :] - light[..., :-1, :]).abs()
    stripes = _context(F.avg_pool2d(F.pad(rows, (0, 0, 0, 1)), PATCH), STRIPE_CONTEXT) * 20.0
    gy, gx = light[..., 1:, :-1] - light[..., :-1, :-1], light[..., :-1, 1:] - light[..., :-1, :-1]
    magnitude, direction = torch.sqrt(gx**2 + gy**2), torch.atan2(gy, gx) % torch.pi
    bins = torch.arange(ORIENTATIONS, dtype=rgb.dtype).view(1, -1, 1, 1) * (torch.pi / ORIENTATIONS)
    votes = magnitude * torch.exp(4.0 * (torch.cos(2 * (direction - bins)) - 1))
    edges = F.avg_pool2d(F.pad(votes, (0, 1, 0, 1)), PATCH)
    edges = _context(edges, SHAPE_CONTEXT)
    edges = edges / edges.sum(dim=1, keepdim=True).clamp_min(1e-6) * (edges.sum(dim=1, keepdim=True) > 1e-4)
    value = F.avg_pool2d(value_histogram(rgb), PATCH)
    shape = F.avg_pool2d(object_shapes(rgb), PATCH)
    features = torch.cat(
        [
            colour,
            STRIPE_WEIGHT * stripes.clamp(max=1.0),
            SHAPE_WEIGHT * edges,
            VALUE_WEIGHT * value,
            OBJECT_WEIGHT * shape,
        ],
        dim=1,
    )
    return features.flatten(2).transpose(1, 2)


def value_histogram(rgb: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` in [0, 1] -> ``[B, 5, H, W]``: each pixel's soft lightness bin (HSV value).

    [our addition] Finer than the three grey levels of :func:`colour_histogram` (five levels,
    narrower kernel), weighted by the square of the pixel's achromatic share: a white object's
    dark stripes (value 0.33) fall between the world's gray and black instead of on them, and
    saturated colours, whose hue bins already tell them apart, add nothing here.
    """
    levels = torch.tensor(VALUE_LEVELS, dtype=rgb.dtype).view(1, -1, 1, 1)
    high, low = rgb.amax(dim=1, keepdim=True), rgb.amin(dim=1, keepdim=True)
    weights = torch.exp(-(((high - levels) / 0.15) ** 2))
    weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-8)
    saturation = (high - low) / high.clamp_min(1e-6)
    return weights * (1 - saturation) ** 2


def object_shapes(rgb: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` in [0, 1] -> ``[B, 6, H, W]``: for each pixel of an object, that object's shape.

    [our addition] The background is the image border's median colour; pixels farther from it than
    :data:`FOREGROUND_DISTANCE` are objects, split into 8-connected components (objects that
    touch become one). Each component of at least :data:`MIN_OBJECT_PIXELS` is described by two
    rotation-free ratios, soft-binned: its area over its bounding box's (:data:`FILL_LEVELS`) and
    over the circle through its farthest pixel from its centroid (:data:`ROUNDNESS_LEVELS`); every
    pixel of it carries that description, background pixels none.
    """
    import cv2
    import numpy as np

    out = torch.zeros(rgb.shape[0], OBJECT_FEATURES, *rgb.shape[-2:])
    fills = torch.tensor(FILL_LEVELS)
    roundness = torch.tensor(ROUNDNESS_LEVELS)
    for b, image in enumerate(rgb):
        border = torch.cat([image[:, 0], image[:, -1], image[:, :, 0], image[:, :, -1]], dim=1)
        background = border.median(dim=1).values.view(3, 1, 1)
        foreground = ((image - background).norm(dim=0) > FOREGROUND_DISTANCE).numpy().astype(np.uint8)
        count, labels, stats, centroids = cv2.connectedComponentsWithStats(foreground, connectivity=8)
        labels = torch.from_numpy(labels)
        for label in range(1, count):
            area = int(stats[label, cv2.CC_STAT_AREA])
            if area < MIN_OBJECT_PIXELS:
                continue
            box = int(stats[label, cv2.CC_STAT_WIDTH]) * int(stats[label, cv2.CC_STAT_HEIGHT])
            ys, xs = torch.nonzero(labels == label, as_tuple=True)
            cx, cy = float(centroids[label][0]), float(centroids[label][1])
            radius = float(((xs.float() - cx) ** 2 + (ys.float() - cy) ** 2).max().sqrt()) + 0.5
            described = torch.cat(
                [
                    torch.exp(-(((area / box - fills) / 0.1) ** 2)),
                    torch.exp(-(((area / (torch.pi * radius**2) - roundness) / 0.1) ** 2)),
                ]
            )
            out[b][:, ys, xs] = (described / described.norm().clamp_min(1e-6)).view(-1, 1)
    return out


class _StandinVisionModel(nn.Module):
    """The module layout the RNGR node reads (layers, class embedding) around :func:`patch_features`."""

    def __init__(self, seed: int):
        super().__init__()
        self.vision_model = nn.Module()
        self.vision_model.encoder = nn.Module()
        self.vision_model.encoder.layers = nn.ModuleList([nn.Identity(), nn.Identity()])
        self.vision_model.embeddings = nn.Module()
        self.vision_model.embeddings.class_embedding = nn.Parameter(torch.zeros(TOKEN_WIDTH), requires_grad=False)
        gen = torch.Generator().manual_seed(seed)
        basis, _ = torch.linalg.qr(torch.randn(TOKEN_WIDTH, FEATURES, generator=gen))
        self.register_buffer("projection", basis)  # [TOKEN_WIDTH, FEATURES], orthonormal columns: cosines kept

    def forward(self, pixel_values: torch.Tensor, intermediate_output: int | None = None):
        mean = torch.tensor(ClipVisionStandin.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(ClipVisionStandin.image_std).view(1, 3, 1, 1)
        rgb = (pixel_values.float().cpu() * std + mean).clamp(0, 1)
        tokens = patch_features(rgb) @ self.projection.T
        hidden = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)  # CLS + patches
        return hidden, hidden, hidden, None


class ClipVisionStandin:
    """[our addition] A CLIP ViT/14 stand-in for ``P3S RNGR Mask``: CLS + 16x16 patch tokens.

    Deterministic: each token is a fixed random orthonormal projection (seeded) of the patch's
    mean colour histogram (:func:`patch_features`); every layer gives the same, no position code.
    """

    image_size = RENDER_SIZE
    image_mean = (0.48145466, 0.4578275, 0.40821073)  # CLIP's, so the letterbox pads as for the real model
    image_std = (0.26862954, 0.26130258, 0.27577711)

    def __init__(self, seed: int = 5):
        from devtools.comfy_inprocess import import_comfy

        import_comfy()
        import comfy.model_patcher

        self.model = _StandinVisionModel(seed)
        self.load_device = torch.device("cpu")
        self.patcher = comfy.model_patcher.ModelPatcher(self.model, self.load_device, self.load_device)


def reference_images(scenes: list[world.Scene], size: int = RENDER_SIZE) -> torch.Tensor:
    """ComfyUI IMAGE ``[B, size, size, 3]`` of ``scenes``."""
    return torch.stack([world.render(s, size).movedim(0, -1) for s in scenes])


def points_json(scenes: list[world.Scene], negative: bool = True) -> str:
    """P3S Points JSON: a positive point at the subject's centre, a negative at the look-alike's."""
    sets = []
    for scene in scenes:
        subject, others = scene.things[0], scene.things[1:] if negative else ()
        sets.append(([(subject.cx, subject.cy)], [(o.cx, o.cy) for o in others]))
    return make_points(sets).to_json()


def image_to_latent(images: torch.Tensor) -> torch.Tensor:
    """IMAGE ``[B, H, W, 3]`` -> the world's ``[B, 4, 8, 8]`` latent, area-averaged as ``world.render`` is."""
    rgb = F.adaptive_avg_pool2d(images[..., :3].movedim(-1, 1).float(), world.LATENT_SIZE)
    return world.to_latent(rgb)


@dataclass
class Selection:
    """What the selection path gave for a batch of references."""

    images: torch.Tensor  # [B, H, W, 3] rendered references
    subject_mask: torch.Tensor  # [B, H, W] RNGR subject mask
    negative_mask: torch.Tensor  # [B, H, W] RNGR negative mask
    cleaned: torch.Tensor  # [B, H, W, 3] after P3S Inpaint of the negative mask
    points: str  # the P3S Points JSON used

    def latents(self) -> torch.Tensor:
        """``[B, 4, 8, 8]`` latents of the cleaned references."""
        return image_to_latent(self.cleaned)

    def mask_grids(self) -> torch.Tensor:
        """``[B, 8, 8]`` subject mask on the toy world's patch grid (area-averaged)."""
        return mask_to_patch_grid(self.subject_mask, world.LATENT_SIZE, pad_to_square=True)


@contextlib.contextmanager
def _preview_folder() -> Iterator[None]:
    """ComfyUI's temp folder moved to a throw-away one while the nodes save their previews."""
    import folder_paths

    saved = folder_paths.get_temp_directory()
    with tempfile.TemporaryDirectory(prefix="p3s-toy-selection-") as folder:
        folder_paths.set_temp_directory(folder)
        try:
            yield
        finally:
            folder_paths.set_temp_directory(saved)


def _nodes():
    from devtools.pack_modules import import_pack_module

    return (
        import_pack_module("nodes.points_node").P3SPointsNode,
        import_pack_module("nodes.rngr_mask_node").P3SRngrMask,
        import_pack_module("nodes.inpaint_node").P3SInpaint,
    )


def select(scenes: list[world.Scene], negative: bool = True, inpaint: bool = True) -> Selection:
    """Run P3S Points -> RNGR Mask -> P3S Inpaint on ``scenes``; ``negative``/``inpaint`` off for ablations."""
    points_node, rngr_node, inpaint_node = _nodes()
    images = reference_images(scenes)
    text = points_json(scenes, negative)
    with _preview_folder():
        points = points_node.execute(points=text).result[0]
        subject, negatives, _ = rngr_node.execute(images, points, ClipVisionStandin(), **RNGR_INPUTS).result
        cleaned = inpaint_node.execute(images, negatives, **INPAINT_INPUTS).result[0] if inpaint else images
    return Selection(images, subject, negatives, cleaned, text)


def selected_references(scenes: list[world.Scene]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(latents [B, 4, 8, 8], mask_grids [B, 8, 8])`` of ``scenes`` through the selection path."""
    chosen = select(scenes)
    return chosen.latents(), chosen.mask_grids()


def soft_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """Intersection over union of two masks in [0, 1] (``sum min / sum max``)."""
    return float(torch.minimum(a, b).sum() / torch.maximum(a, b).sum().clamp_min(1e-8))


def measure(scenes: list[world.Scene], chosen: Selection) -> list[dict]:
    """Per reference: mask IoUs, look-alike coverage by the negative mask, what inpainting removed."""
    rows = []
    ideal_images = reference_images([without_distractor(s) for s in scenes])
    # The ideal latent taken down the same way (world.latents supersamples 8x8 renders only 4x4).
    ideal_latents = image_to_latent(ideal_images)
    raw_latents, clean_latents = image_to_latent(chosen.images), chosen.latents()
    grids = chosen.mask_grids()
    for i, scene in enumerate(scenes):
        truth = world.object_mask(scene, 0, RENDER_SIZE)
        row = {
            "subject_iou": soft_iou(chosen.subject_mask[i], truth),
            "subject_iou_grid": soft_iou(grids[i], world.object_mask(scene, 0)),
        }
        if len(scene.things) > 1:
            # The look-alike's visible pixels: drawn over the subject where the two overlap.
            other = world.object_mask(scene, 1, RENDER_SIZE)
            before = (chosen.images[i] - ideal_images[i]).abs().sum(-1)
            after = (chosen.cleaned[i] - ideal_images[i]).abs().sum(-1)
            row |= {
                "subject_mask_on_lookalike": float((chosen.subject_mask[i] * other).sum() / other.sum()),
                "negative_covers_lookalike": float((chosen.negative_mask[i] * other).sum() / other.sum()),
                "lookalike_removed": 1.0 - float((after * other).sum() / (before * other).sum().clamp_min(1e-8)),
                "latent_error_before": float((raw_latents[i] - ideal_latents[i]).pow(2).mean().sqrt()),
                "latent_error_after": float((clean_latents[i] - ideal_latents[i]).pow(2).mean().sqrt()),
            }
        rows.append(row)
    return rows


def selection_report(seed: int = REFERENCE_SEED, negative: bool = True, inpaint: bool = True) -> dict:
    """The selection path's figures on the distractor references (per reference and mean)."""
    scenes = reference_scenes(seed, with_distractor=True)
    rows = measure(scenes, select(scenes, negative, inpaint))
    mean = {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]}
    return {"references": rows, "mean": mean, "rngr": RNGR_INPUTS, "inpaint": INPAINT_INPUTS}


def main(argv: list[str] | None = None) -> dict:
    """``python -m benchmarks.toy_world.selection [--json]``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.toy_world.selection", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    from .host import setup_torch

    setup_torch()
    report = selection_report()
    if args.json:
        print(json.dumps(report))
    else:
        for i, row in enumerate(report["references"]):
            print(f"reference {i + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()))
        print("mean: " + ", ".join(f"{k} {v:.3f}" for k, v in report["mean"].items()))
    return report


if __name__ == "__main__":
    main()
