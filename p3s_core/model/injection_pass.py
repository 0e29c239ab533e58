"""Running the P3S copy and adding its states to the frozen U-Net: what training and sampling share.

This speaks ComfyUI's patch protocol with plain dicts and callables (no host import):
- :func:`run_copy` runs the copy on ``x + hint_conv(hint)`` and captures every attn1/attn2
  output by ``(block, id, block_index, attn)``; :func:`injection_deltas` passes each through
  its zero injection layer times the step's weight.
- :func:`make_injection_patch` returns the attn1/attn2 output patch of the frozen model: it
  adds the delta of its block out of place (``index_add`` on the injected rows), weighted by the
  application's region at the site's token grid where it has one (our addition).
- :func:`make_attention_probe` keeps a layer's cross-attention probabilities (``L_ac``, maps).
All are plain closures: ComfyUI deep-copies ``model_options`` on every clone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..bases.unet_sites import ATTENTIONS
from ..errors import P3SInputError
from .injection_layers import injection_delta
from .p3s_model import P3SModel
from .run_weights import Cast, cast_like

COND = 0  # ComfyUI's cond_or_uncond value for positive (cond) rows


def attention_probabilities(q: torch.Tensor, k: torch.Tensor, heads: int) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d))`` per head: ``[B, N, H*d]``, ``[B, T, H*d]`` -> ``[B*H, N, T]`` (float32)."""
    b, n, inner = q.shape
    d = inner // heads
    qh = q.float().view(b, n, heads, d).transpose(1, 2).reshape(b * heads, n, d)
    kh = k.float().view(b, k.shape[1], heads, d).transpose(1, 2).reshape(b * heads, k.shape[1], d)
    return torch.softmax(qh @ kh.transpose(1, 2) / d**0.5, dim=-1)


def make_attention_probe(store: dict[str, torch.Tensor], name: str) -> Callable:
    """An ``attn2`` replace patch that keeps the attention probabilities in ``store[name]``.

    It computes the attention itself (``p @ v``, merged back to ``[B, N, C]``; ``to_out`` runs
    after it), so the kept map is exactly the one that produced the layer's output.
    """

    def probe(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict) -> torch.Tensor:
        heads = int(extra_options["n_heads"])
        probs = attention_probabilities(q, k, heads)
        store[name] = probs
        b, n = q.shape[:2]
        vh = v.float().view(b, v.shape[1], heads, -1).transpose(1, 2).reshape(b * heads, v.shape[1], -1)
        out = (probs @ vh).view(b, heads, n, -1).transpose(1, 2).reshape(b, n, -1)
        return out.to(q.dtype)

    return probe


def run_copy(
    p3s: P3SModel,
    x: torch.Tensor,
    timesteps: torch.Tensor,
    context: torch.Tensor,
    hint: torch.Tensor,
    options: dict | None = None,
    base: torch.nn.Module | None = None,
    copy_net: torch.nn.Module | None = None,
    cast: Cast = cast_like,
    y: torch.Tensor | None = None,
) -> dict[tuple[str, int, int, str], torch.Tensor]:
    """Run the copy on ``x + hint_conv(hint)``; return its attn outputs by (block, id, index, attn).

    ``options``: extra entries of the copy's fresh ``transformer_options`` (at sampling, the
    wrapper's ``copy_options``).
    ``base``: the base U-Net being run, whose modules the copy shares (all scopes but ``full``);
    ``copy_net``: the copy's module over it, when the caller already built it.
    ``cast``: how the hint layer's weights reach ``x``'s device and dtype (see :mod:`.run_weights`).
    ``y``: the ADM vector of a base that has one (SDXL's pooled text and size embeddings), the
    frozen pass's own rows of it; None for SD1.5.
    """
    captured: dict[tuple[str, int, int, str], torch.Tensor] = {}

    def capture(attn: str) -> Callable:
        def patch(n: torch.Tensor, extra: dict) -> torch.Tensor:
            block = extra["block"]
            captured[(block[0], block[1], extra.get("block_index", 0), attn)] = n
            return n

        return patch

    fresh = {**(options or {}), "patches": {f"{a}_output_patch": [capture(a)] for a in ATTENTIONS}}
    conv = p3s.hint_conv  # weights cast to the input: wherever ComfyUI left them, in whatever dtype
    bias = cast(conv.bias, x) if conv.bias is not None else None
    x_in = x + F.conv2d(hint.to(x), cast(conv.weight, x), bias)
    if copy_net is None:
        if base is None and p3s.scope != "full":
            raise P3SInputError(f"A P3S model of scope {p3s.scope!r} runs over its base U-Net: pass the base.")
        copy_net = p3s.copy_module(base)
    copy_net(x_in, timesteps, context=context, y=y, transformer_options=fresh)
    return captured


def injection_deltas(
    p3s: P3SModel, captured: dict[tuple[str, int, int, str], torch.Tensor], weight: float, cast: Cast = cast_like
) -> dict[tuple[str, int, int, str], torch.Tensor]:
    """``weight * layer(state)`` for every captured site and attention (weights cast by ``cast``)."""
    deltas = {}
    for site in p3s.sites:
        for attn in ATTENTIONS:
            state = captured.get((*site.host_key, attn))
            if state is None:
                continue
            deltas[(*site.host_key, attn)] = injection_delta(p3s.site_layer(site, attn), state, cast) * weight
    return deltas


def make_injection_patch(attn: str, state_key: str) -> Callable[[torch.Tensor, dict], torch.Tensor]:
    """The frozen model's ``attn1_output_patch`` / ``attn2_output_patch`` for one P3S application."""

    def patch(n: torch.Tensor, extra_options: dict) -> torch.Tensor:
        state = extra_options.get(state_key)
        block = extra_options.get("block")
        if state is None or block is None:
            return n
        delta = state["deltas"].get((block[0], block[1], extra_options.get("block_index", 0), attn))
        if delta is None:
            return n
        region = state.get("region")
        if region is not None:  # [rows, tokens, 1] at this site's grid, from ComfyUI's original_shape
            delta = delta * region.for_site(extra_options.get("original_shape"), n.shape[1], delta)
        rows = state["rows"]  # already on the model's device: nothing here waits for the device
        if rows is None:
            return n + delta.to(n.dtype)
        return n.index_add(0, rows, delta.to(n.dtype))

    return patch
