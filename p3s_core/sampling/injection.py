"""P3S at sampling time: the ``DIFFUSION_MODEL`` wrapper that runs the copy at each step.

This speaks ComfyUI's patch protocol with plain dicts and callables (no host import):
- :func:`make_diffusion_wrapper` returns a ``DIFFUSION_MODEL`` wrapper. Per call it works out
  the step's weight ``w = strength * schedule(progress)`` (0 outside the sigma window); when w
  is 0 it calls the frozen model untouched and the copy does not run. Otherwise it runs the
  copy on ``x + hint_conv(hint)`` (only the cond rows unless ``apply_to_uncond``; with those
  rows of the call's context and ADM input ``y``, which SDXL has), capturing
  every attn1/attn2 output, passes each through its injection layer times w, and hands the
  results to the frozen model in a shallow copy of ``transformer_options`` under ``state_key``,
  where the frozen model's :func:`~..model.injection_pass.make_injection_patch` adds them.
- Other patches reach the copy through ``transformer_options[COPY_PATCHES_REPLACE_KEY]``
  (``{"attn2": {block: fn}}``, e.g. the attention-map capture): the wrapper puts them into the
  copy's fresh options, with ``cond_or_uncond`` of the copy's own rows and the step's sigmas.
- With a ``region`` (:mod:`.regions`, our addition) the injected states are weighted by the
  region at each site's token grid, the copy sees the hint placed in the region, and a call whose
  rows' region is empty skips the copy.
The wrapper is a plain closure: ComfyUI deep-copies ``model_options`` on every clone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from ..errors import P3SInputError
from ..model.injection_pass import COND, injection_deltas, run_copy
from ..model.p3s_model import P3SModel
from ..model.run_weights import RunWeights, cast_like
from .regions import AreaLog, RegionTokens, check_region_batch, chunk_regions, place_hint, region_at_latent, rows_region

REFERENCE_MODES = ("cycle", "mean")
# The ``transformer_options`` keys of the model call that the region reads.
UUIDS_KEY = "uuids"
# transformer_options key whose ``patches_replace``-shaped dict is handed to the copy's forward.
COPY_PATCHES_REPLACE_KEY = "p3s_copy_patches_replace"


class WeightSchedule(Protocol):
    """Anything with ``weight(progress) -> float``; progress 0 = pure noise, 1 = done."""

    def weight(self, progress: float) -> float: ...


class ConstantSchedule:
    """w(s) = value for every step (the default when no schedule is given)."""

    def __init__(self, value: float = 1.0):
        self.value = float(value)

    def weight(self, progress: float) -> float:
        return self.value


@dataclass(frozen=True)
class InjectionSettings:
    """How P3S is applied during sampling.

    ``sigma_range``: ``(sigma_start, sigma_end)``; the copy runs only while
    ``sigma_end <= sigma <= sigma_start`` (ControlNet-style start/end percent). None = always.
    ``reference_mode``: ``cycle`` = sample i uses reference i mod R; ``mean`` = mean hint.
    """

    strength: float = 1.0
    sigma_range: tuple[float, float] | None = None
    apply_to_uncond: bool = False
    reference_mode: str = "cycle"

    def __post_init__(self) -> None:
        if self.reference_mode not in REFERENCE_MODES:
            raise P3SInputError(f"reference_mode must be one of {REFERENCE_MODES}, not '{self.reference_mode}'.")


def step_index(sigma: float, sample_sigmas: torch.Tensor | Sequence[float]) -> tuple[int, int]:
    """``(index, steps)``: the 0-based sampling step whose sigma is nearest ``sigma``, and the step count.

    ``sample_sigmas``: the sampler's schedule, a tensor or its values as Python floats
    (:class:`SigmaCache`), which need no device sync.
    """
    steps = sample_sigmas[:-1].float().cpu().tolist() if isinstance(sample_sigmas, torch.Tensor) else sample_sigmas[:-1]
    sigma = float(sigma)
    return min(range(len(steps)), key=lambda i: abs(steps[i] - sigma)), len(steps)


class SigmaCache:
    """The values of the latest sampler schedule as Python floats: one device read per sampling run."""

    def __init__(self):
        self._tensor: torch.Tensor | None = None
        self._floats: list[float] = []

    def floats(self, sample_sigmas: torch.Tensor) -> list[float]:
        if sample_sigmas is not self._tensor:
            self._floats = sample_sigmas.detach().float().tolist()
            self._tensor = sample_sigmas
        return self._floats


def step_progress(sigma: float, sample_sigmas: torch.Tensor | Sequence[float] | None, timestep: float) -> float:
    """Denoising progress s in [0, 1] of the current step (0 = first, pure noise).

    From the step's position in ``sample_sigmas`` when the sampler provides it, else from the
    timestep (0..999) the U-Net receives.
    """
    if sample_sigmas is not None and len(sample_sigmas) > 1:
        index, steps = step_index(sigma, sample_sigmas)
        return index / max(steps - 1, 1)
    return min(max(1.0 - float(timestep) / 999.0, 0.0), 1.0)


def injected_rows(cond_or_uncond: list[int] | None, batch: int, apply_to_uncond: bool) -> torch.Tensor | None:
    """Batch rows that receive the injection: None = all rows, empty = none."""
    if apply_to_uncond or not cond_or_uncond:
        return None
    chunk = batch // len(cond_or_uncond)
    rows = [r for i, kind in enumerate(cond_or_uncond) if kind == COND for r in range(i * chunk, (i + 1) * chunk)]
    return torch.tensor(rows, dtype=torch.long)


def hint_for_rows(hint: torch.Tensor, rows: torch.Tensor, chunk: int, size: tuple[int, int], mode: str) -> torch.Tensor:
    """The hint per injected row: references cycled over the samples of each chunk (or averaged)."""
    if mode == "mean":
        hint = hint.mean(dim=0, keepdim=True)
    if tuple(hint.shape[-2:]) != tuple(size):
        hint = F.interpolate(hint, size=size, mode="bilinear", align_corners=False)
    sample = rows % chunk
    return hint[sample % hint.shape[0]]


def copy_options(transformer_options: dict, rows: torch.Tensor | None, batch: int) -> dict:
    """Options for the copy's forward from other patches (``COPY_PATCHES_REPLACE_KEY``); {} when none.

    ``cond_or_uncond`` describes the copy's own rows: only cond chunks when it runs on ``rows``.
    """
    replace = transformer_options.get(COPY_PATCHES_REPLACE_KEY)
    if not replace:
        return {}
    groups = transformer_options.get("cond_or_uncond")
    if rows is not None and groups:
        groups = [COND] * (len(rows) // (batch // len(groups)))
    options = {"patches_replace": replace, "cond_or_uncond": groups}
    for key in ("sigmas", "sample_sigmas"):
        if key in transformer_options:
            options[key] = transformer_options[key]
    return options


@dataclass(frozen=True)
class RegionSettings:
    """Where one P3S application acts (our addition): ``masks`` ``[M, H, W]`` in [0, 1] (one for every
    sample, or one per sample), feathered by ``feather`` image pixels (``pixels_per_latent`` image
    pixels per latent pixel). ``areas``: what the sampler's ``calc_cond_batch`` saw
    (:func:`.regions.make_area_recorder`): the area offsets where ComfyUI's area conditioning runs
    the model on crops, and the conditionings' masks; None = every call covers the whole latent."""

    masks: torch.Tensor
    feather: float = 0.0
    pixels_per_latent: int = 1
    areas: AreaLog | None = None


def make_diffusion_wrapper(
    p3s: P3SModel,
    hint: torch.Tensor,
    settings: InjectionSettings,
    schedule: WeightSchedule | None,
    state_key: str,
    region: RegionSettings | None = None,
    run_weights: RunWeights | None = None,
) -> Callable[..., Any]:
    """The ``DIFFUSION_MODEL`` wrapper that runs the copy and hands its states to the patches.

    ``region`` (our addition): the injection acts only there (see :class:`RegionSettings`); None
    is the whole image, exactly as without the option.
    ``run_weights`` (our addition): the P3S layers' weights cast to the sampler's device and dtype
    once per run (:mod:`..model.run_weights`; the caller clears it when the run ends); None casts
    them on every call.

    Per model call it reads the current sigma once (one device sync); the schedule's sigmas are
    read once per sampling run (:class:`SigmaCache`); row indices and per-row hints are built
    once per batch layout and device and cached; the attention patches read only what it hands
    them, so nothing inside the U-Net waits for the device.
    """
    schedule = schedule or ConstantSchedule(1.0)
    cast = run_weights if run_weights is not None else cast_like
    sigma_cache = SigmaCache()
    layouts: dict[tuple, tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, RegionTokens | None]] = {}
    latent_regions: dict[tuple[int, int], torch.Tensor] = {}

    def step_weight(transformer_options: dict, timesteps: torch.Tensor) -> float:
        sigmas = transformer_options.get("sigmas")
        if sigmas is None:
            return settings.strength * float(schedule.weight(step_progress(0.0, None, float(timesteps.max()))))
        sigma = float(sigmas.max())
        window = settings.sigma_range
        if window is not None and not window[1] <= sigma <= window[0]:
            return 0.0
        sample_sigmas = transformer_options.get("sample_sigmas")
        if sample_sigmas is None:
            progress = step_progress(sigma, None, float(timesteps.max()))
        else:
            progress = step_progress(sigma, sigma_cache.floats(sample_sigmas), 0.0)
        return settings.strength * float(schedule.weight(progress))

    def region_rows(groups, x, index, transformer_options) -> RegionTokens:
        """The region of the rows ``index`` of this call, at ``x``'s latent size."""
        chunk = x.shape[0] // len(groups or [0])
        check_region_batch(region.masks.shape[0], chunk)
        size = (int(x.shape[-2]), int(x.shape[-1]))
        full = region.areas.latent_size if region.areas is not None and region.areas.latent_size else size
        if full not in latent_regions:
            latent_regions[full] = region_at_latent(region.masks, full, region.feather, region.pixels_per_latent)
        uuids = transformer_options.get(UUIDS_KEY)
        parts = chunk_regions(latent_regions[full], len(groups or [0]), size, uuids, region.areas)
        return RegionTokens(rows_region(parts, index, chunk))

    def layout(groups: list[int] | None, x: torch.Tensor, transformer_options: dict):
        """``(rows on x's device or None = all, the same rows on the CPU, their hints, their region)``,
        cached per layout."""
        key = (tuple(groups or ()), x.shape[0], tuple(x.shape[-2:]), x.device, x.dtype)
        if region is not None:
            uuids = transformer_options.get(UUIDS_KEY)
            areas = region.areas
            known = areas is not None and uuids
            offsets = tuple((areas.offsets.get(u), id(areas.masks.get(u))) for u in uuids) if known else ()
            key += (areas.latent_size if areas is not None else None, offsets)
        if key not in layouts:
            rows = injected_rows(groups, x.shape[0], settings.apply_to_uncond)
            index = torch.arange(x.shape[0]) if rows is None else rows
            chunk = x.shape[0] // len(groups or [0])
            row_hint = hint_for_rows(hint, index, chunk, x.shape[-2:], settings.reference_mode)
            weights = None
            if region is not None and index.numel():
                weights = region_rows(groups, x, index, transformer_options)
                row_hint = place_hint(row_hint, weights.region)
            layouts[key] = (rows.to(x.device) if rows is not None else None, index, row_hint.to(x), weights)
        return layouts[key]

    def wrapper(executor, x, timesteps, context, y, control, transformer_options, **kwargs):
        weight = step_weight(transformer_options, timesteps)
        rows, index, row_hint, weights = layout(transformer_options.get("cond_or_uncond"), x, transformer_options)
        if weight == 0.0 or index.numel() == 0 or (weights is not None and weights.is_empty()):
            return executor(x, timesteps, context, y, control, transformer_options, **kwargs)

        if rows is None:
            sub_x, sub_t, sub_context, sub_y = x, timesteps, context, y
        else:
            sub_x, sub_t = x[rows], timesteps[rows]
            sub_context = context[rows] if context is not None else None
            sub_y = y[rows] if y is not None else None  # the ADM input of a base with one (SDXL)
        extra = copy_options(transformer_options, index if rows is not None else None, x.shape[0])
        # The copy shares the modules of the U-Net being sampled (the wrapper's class object).
        base = getattr(executor, "class_obj", None)
        captured = run_copy(p3s, sub_x, sub_t, sub_context, row_hint, extra, base, cast=cast, y=sub_y)
        options = dict(transformer_options)
        deltas = injection_deltas(p3s, captured, weight, cast)
        options[state_key] = {"deltas": deltas, "rows": rows, "region": weights}
        return executor(x, timesteps, context, y, control, options, **kwargs)

    return wrapper
