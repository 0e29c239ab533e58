"""Cross-attention maps of the frozen U-Net and of the P3S copy, captured while sampling.

:func:`make_attn2_capture` returns an attn2 replace patch (ComfyUI's ``fn(q, k, v,
extra_options)``) that computes the layer's output with the attention function it is given
(the one ComfyUI would have used, so the sampled image does not change) and hands the
probabilities ``softmax(q k^T / sqrt(d))`` of the cond rows to an :class:`AttentionRecorder`.

The recorder aggregates as it goes [reconstructed]: per step bin it keeps the running sum of
the head-averaged maps of the chosen token groups, area-pooled to at most ``max_side`` pixels a
side, per sample; the number of step bins shrinks so that both roles fit in ``budget_bytes``.
``L_ac`` (:func:`p3s_core.training.losses.attention_consistency_loss`) is computed per model call on the
full cond-row probabilities of both roles and averaged per step. The copy runs before the
frozen model in each call (P3S Apply's wrapper), so its probabilities wait for the frozen ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..bases.sd15 import LAST_CROSS_ATTENTION
from ..errors import P3SInputError
from ..model.injection_pass import COND, attention_probabilities
from ..sampling.injection import step_index
from ..training.losses import NORMALISATIONS, attention_consistency_loss

ROLES = ("frozen", "copy")
DEFAULT_BLOCK = LAST_CROSS_ATTENTION  # [stated] SD1.5's last cross-attention layer, the one L_ac uses
DEFAULT_MAX_SIDE = 64
DEFAULT_BUDGET_BYTES = 64 * 2**20

AttentionFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class TokenGroup:
    """Context columns whose probabilities are summed into one map (a word may be several tokens)."""

    label: str
    columns: tuple[int, ...]


@dataclass(frozen=True)
class CaptureSettings:
    """What to capture: the layer, the token groups (None = every column on its own), limits."""

    block: tuple[str, int] | tuple[str, int, int] = DEFAULT_BLOCK
    groups: tuple[TokenGroup, ...] | None = None
    max_side: int = DEFAULT_MAX_SIDE
    budget_bytes: int = DEFAULT_BUDGET_BYTES
    normalisation: str = "mean"

    def __post_init__(self) -> None:
        if self.normalisation not in NORMALISATIONS:
            raise P3SInputError(f"L_ac normalisation must be one of {NORMALISATIONS}, not {self.normalisation!r}.")
        if self.max_side < 1 or self.budget_bytes < 1:
            raise P3SInputError("max_side and budget_bytes must be positive.")
        if self.groups is not None and not all(g.columns for g in self.groups):
            raise P3SInputError("Every token group needs at least one context column.")


def attention_probs(q: torch.Tensor, k: torch.Tensor, heads: int) -> torch.Tensor:
    """:func:`attention_probabilities` with heads as their own axis: ``[B, H, N, T]``."""
    return attention_probabilities(q, k, heads).unflatten(0, (q.shape[0], heads))


def cond_rows(cond_or_uncond: Sequence[int] | None, batch: int) -> tuple[torch.Tensor, int]:
    """``(rows, samples)``: the cond rows of a batch (chunk order) and the samples per chunk."""
    if not cond_or_uncond:
        return torch.arange(batch), batch
    chunk = batch // len(cond_or_uncond)
    rows = [r for i, kind in enumerate(cond_or_uncond) if kind == COND for r in range(i * chunk, (i + 1) * chunk)]
    return torch.tensor(rows, dtype=torch.long), chunk


def spatial_size(tokens: int, original_shape: Sequence[int] | None) -> tuple[int, int]:
    """``(h, w)`` of a layer with ``tokens`` pixels, from the latent's ``[B, C, H, W]`` shape."""
    if original_shape is not None:
        height, width = int(original_shape[-2]), int(original_shape[-1])
        for factor in (1, 2, 4, 8, 16):
            h, w = math.ceil(height / factor), math.ceil(width / factor)
            if h * w == tokens:
                return h, w
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise P3SInputError(f"Cannot tell the shape of a {tokens}-pixel attention map; the latent shape is missing.")
    return side, side


def probs_to_maps(
    probs: torch.Tensor, size: tuple[int, int], groups: Sequence[TokenGroup] | None = None
) -> torch.Tensor:
    """Head-averaged maps ``[B, G, h, w]`` of ``[B, H, N, T]`` probabilities, one per token group (or column)."""
    mean = probs.float().mean(dim=1)  # [B, N, T]
    if groups is not None:
        mean = torch.stack([mean[..., list(g.columns)].sum(dim=-1) for g in groups], dim=-1)
    return mean.transpose(1, 2).reshape(probs.shape[0], -1, *size)


class AttentionRecorder:
    """Running per-step aggregates of both roles' maps and of ``L_ac`` (see the module docs)."""

    def __init__(self, settings: CaptureSettings):
        self.settings = settings
        # Per model call the sampler hands every layer the same ``sigmas`` tensor, and per run the
        # same ``sample_sigmas``: each is read from the device once (our addition: no host sync per
        # layer), and the sums stay on the maps' device until they are read.
        self._sigma: tuple[torch.Tensor | None, float] = (None, 0.0)
        self._schedule: tuple[torch.Tensor | None, list[float]] = (None, [])
        self.reset()

    def reset(self) -> None:
        """Forget everything (called when a new sampling run starts)."""
        self.num_steps = 0
        self.bins = 0
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, torch.Tensor] = {}
        self._loss_sum: list[torch.Tensor | float] = []
        self._loss_count: list[int] = []
        self._pending_copy: tuple[int, torch.Tensor] | None = None

    @property
    def labels(self) -> list[str]:
        """Names of the stored maps (token groups, or ``#column``)."""
        if self.settings.groups is not None:
            return [g.label for g in self.settings.groups]
        if not self._sums:
            return []
        return [f"#{i}" for i in range(next(iter(self._sums.values())).shape[2])]

    def calls(self, role: str) -> int:
        """Model calls recorded for ``role`` in the current run."""
        counts = self._counts.get(role)
        return 0 if counts is None else int(counts.sum())

    def stored_bytes(self) -> int:
        """Bytes held by the aggregated maps."""
        return sum(t.numel() * t.element_size() for t in self._sums.values())

    def _step(self, options: dict) -> int:
        sample_sigmas = options.get("sample_sigmas")
        sigmas = options.get("sigmas")
        if sample_sigmas is None or sigmas is None or len(sample_sigmas) < 2:
            index, steps = 0, max(self.num_steps, 1)  # outside a sampler: one step
        else:
            index, steps = step_index(self._read_sigma(sigmas), self._read_schedule(sample_sigmas))
        if steps != self.num_steps:
            self.reset()
            self.num_steps = steps
            self._loss_sum, self._loss_count = [0.0] * steps, [0] * steps
        return index

    def _read_sigma(self, sigmas: torch.Tensor) -> float:
        """The call's sigma, read from the device once per model call (the frozen and the copy's
        layers get the same tensor; holding it keeps its identity from being reused)."""
        if sigmas is not self._sigma[0]:
            self._sigma = (sigmas, float(sigmas.max()))
        return self._sigma[1]

    def _read_schedule(self, sample_sigmas) -> list[float]:
        """The run's sigmas as floats, read from the device once per sampling run."""
        if not isinstance(sample_sigmas, torch.Tensor):
            return [float(v) for v in sample_sigmas]
        if sample_sigmas is not self._schedule[0]:
            self._schedule = (sample_sigmas, sample_sigmas.detach().float().tolist())
        return self._schedule[1]

    def _store(self, role: str, step: int, maps: torch.Tensor) -> None:
        scale = min(1.0, self.settings.max_side / max(maps.shape[-2:]))
        size = (max(1, round(maps.shape[-2] * scale)), max(1, round(maps.shape[-1] * scale)))
        if tuple(maps.shape[-2:]) != size:
            maps = F.adaptive_avg_pool2d(maps, size)
        shape = tuple(maps.shape)
        stored = self._sums.get(role)
        if stored is None or tuple(stored.shape[1:]) != shape:
            per_bin = len(ROLES) * maps.numel() * 4
            self.bins = max(1, min(max(self.num_steps, 1), self.settings.budget_bytes // per_bin))
            self._sums = {r: maps.new_zeros((self.bins, *shape), dtype=torch.float32) for r in ROLES}
            self._counts = {r: torch.zeros(self.bins) for r in ROLES}
        b = step * self.bins // max(self.num_steps, 1)
        self._sums[role][b] += maps.to(self._sums[role].device, torch.float32)
        self._counts[role][b] += 1

    def record(self, role: str, probs: torch.Tensor, options: dict, samples: int | None = None) -> None:
        """Add one call's cond-row probabilities ``[B, H, N, T]`` of ``role``.

        ``options``: the patch's extra_options (step, latent shape); ``samples``: rows per cond
        chunk (several cond chunks are averaged per sample); None = every row is a sample.
        """
        if role not in ROLES:
            raise P3SInputError(f"role must be one of {ROLES}, not {role!r}.")
        samples = samples or probs.shape[0]
        step = self._step(options)
        if role == "copy":
            self._pending_copy = (step, probs)
        elif self._pending_copy is not None:
            copy_step, copy_probs = self._pending_copy
            self._pending_copy = None
            if copy_step == step and copy_probs.shape == probs.shape and self.num_steps:
                loss = attention_consistency_loss(copy_probs, probs, self.settings.normalisation)
                self._loss_sum[step] = self._loss_sum[step] + loss.detach().float()
                self._loss_count[step] += 1
        size = spatial_size(probs.shape[2], options.get("original_shape"))
        maps = probs_to_maps(probs, size, self.settings.groups)
        maps = maps.reshape(-1, samples, *maps.shape[1:]).mean(dim=0)  # several cond chunks: their mean
        self._store(role, step, maps)

    def maps(self, role: str, steps: Sequence[int] | None = None) -> torch.Tensor | None:
        """Mean map ``[samples, groups, h, w]`` of ``role`` over 1-based ``steps`` (None = all); None if never run.

        When the memory budget merged steps into bins, a step stands for its whole bin.
        """
        if role not in self._sums or not self.num_steps:
            return None
        if steps is None:
            chosen = list(range(self.bins))
        else:
            bad = [s for s in steps if not 1 <= s <= self.num_steps]
            if bad:
                raise P3SInputError(f"Steps {bad} are outside the sampling run's steps 1..{self.num_steps}.")
            chosen = sorted({(s - 1) * self.bins // self.num_steps for s in steps})
        counts = self._counts[role][chosen]
        if float(counts.sum()) == 0:
            return None
        return self._sums[role][chosen].sum(dim=0).cpu() / counts.sum()

    def loss_curve(self) -> list[float | None]:
        """``L_ac`` per sampling step (mean over the step's calls); None where the copy did not run."""
        return [float(s) / c if c else None for s, c in zip(self._loss_sum, self._loss_count, strict=True)]


def make_attn2_capture(
    recorder: AttentionRecorder, role: str, attention_fn: AttentionFn, previous: Callable | None = None
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor, dict], torch.Tensor]:
    """An attn2 replace patch that records ``role``'s probabilities and returns the layer's usual output.

    The output comes from ``previous`` (a replace patch already on that layer) or from
    ``attention_fn(q, k, v, heads, attn_precision=..., transformer_options=...)``, the call
    ComfyUI's ``CrossAttention`` makes, so the result is the same as without the patch.
    """

    def patch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict) -> torch.Tensor:
        heads = extra_options["n_heads"]
        if previous is not None:
            out = previous(q, k, v, extra_options)
        else:
            out = attention_fn(
                q, k, v, heads, attn_precision=extra_options.get("attn_precision"), transformer_options=extra_options
            )
        rows, samples = cond_rows(extra_options.get("cond_or_uncond"), q.shape[0])
        if rows.numel():
            with torch.no_grad():
                rows = rows.to(q.device)
                probs = attention_probs(q.detach()[rows], k.detach()[rows], heads)
                recorder.record(role, probs, extra_options, samples)
        return out

    return patch


def make_reset_wrapper(recorder: AttentionRecorder) -> Callable:
    """An ``OUTER_SAMPLE`` wrapper that clears the recorder when a sampling run starts."""

    def wrapper(executor, *args, **kwargs):
        recorder.reset()
        return executor(*args, **kwargs)

    return wrapper
