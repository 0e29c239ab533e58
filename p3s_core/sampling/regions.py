"""Regions: where in the image one P3S application acts (our addition; the paper has one subject
per image and says nothing of places).

A region is a mask (ComfyUI's MASK: ``[H, W]`` or ``[M, H, W]`` in [0, 1], at image size, latent
size or any other size) given to *P3S Apply*. At sampling it is

1. matched to the latent batch (:func:`check_region_batch`: one mask for every sample, or one per
   sample in order; any other count is an error raised before the first step),
2. resized to the latent (:func:`resize_mask`: area-averaged when shrinking, nearest when
   growing, so a constant mask stays exactly constant) and feathered (:func:`feather_mask`: a box
   blur ``feather`` image pixels wide, so a hard edge becomes a linear ramp of that width centred
   on it; borders are replicated, so the image's own edges never fade),
3. cropped to the part of the latent a model call sees (ComfyUI's area conditioning runs the
   U-Net on a crop: :class:`AreaLog` records each conditioning's offset from the sampler's
   ``calc_cond_batch``, the model call names its conditionings in ``uuids``), and for a mask
   conditioning kept to where its mask is above 0 (so a subject's injection stays out of the rows
   of another subject's prompt),
4. brought to each injection site's token grid (:func:`token_grid` reads the grid from ComfyUI's
   ``original_shape`` and the site's token count, for any aspect ratio, odd sizes included) and
   multiplied into that site's injected attention state (:class:`RegionTokens`), and
5. used to place the hint (:func:`place_hint`): the reference hint is resized into the region's
   bounding box and weighted by the region, so the copy sees the subject's latent bias where the
   subject is to appear, and nothing of it elsewhere.

Everything speaks ComfyUI's patch protocol with plain tensors, dicts and callables (no host import).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import P3SInputError

MAX_FEATHER = 4096


def as_region_masks(region: torch.Tensor, label: str = "region") -> torch.Tensor:
    """``region`` as float32 ``[M, H, W]`` in [0, 1] on the CPU, or a ``P3SInputError`` saying what to give.

    Accepts ComfyUI's MASK shapes ``[H, W]`` and ``[M, H, W]`` (and ``[M, H, W, 1]``).
    """
    if not isinstance(region, torch.Tensor):
        raise P3SInputError(f"The {label} must be a MASK; got {type(region).__name__}. Connect a MASK output.")
    masks = region.detach()
    if masks.ndim == 4 and masks.shape[-1] == 1:
        masks = masks[..., 0]
    if masks.ndim == 2:
        masks = masks.unsqueeze(0)
    if masks.ndim != 3 or 0 in masks.shape:
        raise P3SInputError(
            f"The {label} must be a MASK of shape [H, W] or [batch, H, W]; got {tuple(region.shape)}. "
            "Connect a MASK (e.g. Load Image's MASK output, Solid Mask, or Convert Image to Mask)."
        )
    masks = masks.to("cpu", torch.float32)
    if not torch.isfinite(masks).all():
        raise P3SInputError(f"The {label} holds NaN or infinite values: give a mask with values in [0, 1].")
    return masks.clamp(0.0, 1.0)


def check_region_batch(masks: int, samples: int, label: str = "region") -> None:
    """A region of ``masks`` masks fits a latent batch of ``samples`` when it is 1 (for all) or ``samples``."""
    if masks not in (1, samples):
        raise P3SInputError(
            f"The {label} has {masks} masks but the latent batch has {samples} samples: give one mask for "
            f"every sample, or {samples} masks (one per sample, in order)."
        )


def check_feather(feather: float, label: str = "region_feather") -> float:
    """``feather`` (image pixels) as a float, finite and in [0, MAX_FEATHER], or a clear error."""
    value = float(feather)
    if not math.isfinite(value) or not 0.0 <= value <= MAX_FEATHER:
        raise P3SInputError(f"{label} is {feather}; give a width in pixels from 0 (a hard edge) to {MAX_FEATHER}.")
    return value


def resize_mask(masks: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``[M, H, W]`` -> ``[M, h, w]``: area-averaged where it shrinks, nearest where it grows.

    Neither mode mixes values across a constant mask, so all-ones stays exactly ones and all-zeros
    exactly zeros.
    """
    size = (int(size[0]), int(size[1]))
    if tuple(masks.shape[-2:]) == size:
        return masks
    x = masks.unsqueeze(1)
    if size[0] < x.shape[-2]:
        x = F.interpolate(x, size=(size[0], x.shape[-1]), mode="area")
    elif size[0] > x.shape[-2]:
        x = F.interpolate(x, size=(size[0], x.shape[-1]), mode="nearest-exact")
    if size[1] < x.shape[-1]:
        x = F.interpolate(x, size=size, mode="area")
    elif size[1] > x.shape[-1]:
        x = F.interpolate(x, size=size, mode="nearest-exact")
    return x.squeeze(1)


def feather_mask(masks: torch.Tensor, width: float) -> torch.Tensor:
    """A box blur ``width`` pixels wide along each axis: a hard edge becomes a linear ramp of that width.

    Borders are replicated (the image's own edges keep their value). ``width`` below 1 is no blur.
    """
    k = round(width)
    if k <= 1:
        return masks
    x = masks.unsqueeze(1)
    before, after = (k - 1) // 2, k // 2
    x = F.pad(x, (before, after, before, after), mode="replicate")
    x = F.avg_pool2d(x, kernel_size=(k, 1), stride=1)
    x = F.avg_pool2d(x, kernel_size=(1, k), stride=1)
    return x.squeeze(1).clamp(0.0, 1.0)


def region_at_latent(
    masks: torch.Tensor, latent_size: Sequence[int], feather: float = 0.0, pixels_per_latent: int = 1
) -> torch.Tensor:
    """``[M, h, w]``: the region at the latent's size, feathered by ``feather`` image pixels.

    With a feather the mask is first brought to image size (latent x ``pixels_per_latent``),
    blurred there, then area-averaged to the latent, so the ramp's width is in the user's pixels.
    """
    h, w = int(latent_size[0]), int(latent_size[1])
    if feather < 1:
        return resize_mask(masks, (h, w))
    image = resize_mask(masks, (h * pixels_per_latent, w * pixels_per_latent))
    return resize_mask(feather_mask(image, feather), (h, w))


def token_grid(original_shape: Sequence[int], tokens: int) -> tuple[int, int]:
    """The ``(h, w)`` token grid of an attention layer with ``tokens`` tokens, in a U-Net whose input is
    ``original_shape`` (ComfyUI's ``[B, C, ..., H, W]``).

    U-Net levels halve the grid with stride-2 convolutions (``ceil(n / 2)`` for odd sizes); the level
    whose grid holds exactly ``tokens`` is taken. Failing that (another architecture), the grid of
    the input's aspect ratio whose sides multiply to ``tokens``.
    """
    h, w = int(original_shape[-2]), int(original_shape[-1])
    while h * w > tokens and (h > 1 or w > 1):
        h, w = -(-h // 2), -(-w // 2)
    if h * w == tokens:
        return h, w
    ratio = int(original_shape[-2]) / int(original_shape[-1])
    best = min(
        (d for d in range(1, tokens + 1) if tokens % d == 0),
        key=lambda d: abs(math.log(d / (tokens // d)) - math.log(ratio)),
    )
    return best, tokens // best


@dataclass
class AreaLog:
    """What the sampler's ``calc_cond_batch`` saw last: the whole latent's size, the offset ``(y, x)``
    of every area conditioning by its ``uuid`` (ComfyUI runs those on a crop), and the mask of every
    mask conditioning by its ``uuid`` (where that conditioning counts)."""

    latent_size: tuple[int, int] | None = None
    offsets: dict[Any, tuple[int, int]] = field(default_factory=dict)
    masks: dict[Any, torch.Tensor] = field(default_factory=dict)

    def record(self, conds: Sequence[Any], x_in: torch.Tensor) -> None:
        self.latent_size = (int(x_in.shape[-2]), int(x_in.shape[-1]))
        self.offsets, self.masks = {}, {}
        for group in conds:
            for cond in group or ():
                if not isinstance(cond, dict) or "uuid" not in cond:
                    continue
                area = cond.get("area")
                if area is not None and len(area) >= 4 and not isinstance(area[0], str):
                    dims = len(area) // 2
                    self.offsets[cond["uuid"]] = (int(area[dims + dims - 2]), int(area[dims + dims - 1]))
                mask = cond.get("mask")
                if isinstance(mask, torch.Tensor) and mask.ndim >= 2:
                    self.masks[cond["uuid"]] = mask.reshape(-1, *mask.shape[-2:])


def make_area_recorder(log: AreaLog) -> Callable[..., Any]:
    """A ``CALC_COND_BATCH`` wrapper that fills ``log`` before each batch of model calls."""

    def wrapper(executor, model, conds, x_in, timestep, model_options, *args, **kwargs):
        log.record(conds, x_in)
        return executor(model, conds, x_in, timestep, model_options, *args, **kwargs)

    return wrapper


def make_batch_check(masks: int, label: str = "region") -> Callable[..., Any]:
    """An ``OUTER_SAMPLE`` wrapper that refuses a region whose mask count fits not the latent batch,
    before the first step."""

    def wrapper(executor, noise, *args, **kwargs):
        check_region_batch(masks, int(noise.shape[0]), label)
        return executor(noise, *args, **kwargs)

    return wrapper


def chunk_regions(
    region: torch.Tensor,
    groups: int,
    size: tuple[int, int],
    uuids: Sequence[Any] | None,
    log: AreaLog | None,
) -> list[torch.Tensor]:
    """Per row group of a model call, the part of ``region`` (``[M, H, W]`` at the whole latent's
    size, or any size when that is unknown) that its input ``size`` covers: the crop at the group's
    area offset, else the whole region resized to ``size``; where the group's conditioning has a
    mask, only where that mask is above 0 (outside it ComfyUI discards the group's prediction, and
    an injection there would only reach the rest of the image through the U-Net's mixing)."""
    out = []
    full = log.latent_size if log is not None else None
    for i in range(groups):
        uuid = uuids[i] if uuids is not None and i < len(uuids) else None
        offset = log.offsets.get(uuid) if log is not None and uuid is not None else None
        if offset is None and full is not None and tuple(size) == full:
            offset = (0, 0)
        part = None
        if offset is not None and tuple(region.shape[-2:]) == full:
            y, x = offset
            crop = region[:, y : y + size[0], x : x + size[1]]
            part = crop if tuple(crop.shape[-2:]) == tuple(size) else None
        if part is None:
            part = resize_mask(region, size)
        mask = log.masks.get(uuid) if log is not None and uuid is not None else None
        if mask is not None and offset is not None and tuple(mask.shape[-2:]) == full:
            y, x = offset
            support = (mask[:, y : y + size[0], x : x + size[1]] > 0).to(device=part.device, dtype=part.dtype)
            if tuple(support.shape[-2:]) == tuple(size):
                if support.shape[0] not in (1, part.shape[0]):
                    support = support.amax(dim=0, keepdim=True)
                part = part * support
        out.append(part)
    return out


def rows_region(chunks: list[torch.Tensor], rows: torch.Tensor, chunk: int) -> torch.Tensor:
    """``[R, h, w]``: the region of each batch row in ``rows`` (row r: group ``r // chunk``, sample
    ``r % chunk``; a single mask serves every sample)."""
    picked = []
    for r in rows.tolist():
        masks = chunks[r // chunk]
        picked.append(masks[0] if masks.shape[0] == 1 else masks[r % chunk])
    return torch.stack(picked)


def place_hint(hint: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """``[R, C, h', w']`` hints placed into each row's region ``[R, h, w]``: resized (bilinear) into the
    bounding box of the region's pixels >= 0.5 (of those > 0 if none is), zero outside, times the
    region; the result is ``[R, C, h, w]``.

    An all-ones region leaves the hint as it is; an empty one gives a zero hint.
    """
    out = hint.new_zeros((hint.shape[0], hint.shape[1], *region.shape[-2:]))
    weight = region.to(hint)
    for i in range(hint.shape[0]):
        core = region[i] >= 0.5
        if not core.any():
            core = region[i] > 0
        if not core.any():
            continue
        ys = torch.nonzero(core.any(dim=1)).flatten()
        xs = torch.nonzero(core.any(dim=0)).flatten()
        y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
        row = hint[i : i + 1]
        if (y1 - y0, x1 - x0) != tuple(row.shape[-2:]):
            row = F.interpolate(row, size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)
        out[i, :, y0:y1, x0:x1] = row[0]
    return out * weight.unsqueeze(1)


class RegionTokens:
    """The region of the injected rows (``[R, h, w]`` at the model input's latent size) at each
    injection site's token grid, ``[R, N, 1]``, cached per grid, device and dtype."""

    def __init__(self, region: torch.Tensor):
        self.region = region
        self._empty = not bool((region > 0).any())
        self._cache: dict[tuple, torch.Tensor] = {}

    def is_empty(self) -> bool:
        """Whether no row has any weight anywhere (the copy need not run)."""
        return self._empty

    def for_site(self, original_shape: Sequence[int] | None, tokens: int, like: torch.Tensor) -> torch.Tensor:
        """The weights ``[R, tokens, 1]`` of a site with ``tokens`` tokens, cast like ``like``."""
        shape = original_shape if original_shape is not None else (1, 1, *self.region.shape[-2:])
        grid = token_grid(shape, tokens)
        key = (grid, like.device, like.dtype)
        if key not in self._cache:
            weights = resize_mask(self.region.float(), grid).flatten(1).unsqueeze(-1)
            self._cache[key] = weights.to(device=like.device, dtype=like.dtype)
        return self._cache[key]
