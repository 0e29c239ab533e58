"""One training step's losses, ``(L_LDM, L_ac)`` [stated], and the forwards that reuse it.

:func:`step_losses` runs the subject encoder (hint), the copy and the frozen U-Net with the
injections, as every training step does; :func:`reference_attention` (the Fine-tune's
overlays) and :func:`evaluate_loss` run the same forward without gradients. The step's
randomness (:func:`epoch_generator`, :func:`draw_step`) is a function of the seed and the
epoch only, which is what makes resume exact.
"""

from __future__ import annotations

import torch
from torch import nn

from ..bases.registry import base_named
from ..bases.unet_sites import ATTENTIONS, last_layer_key, layer_key
from ..model.injection_pass import injection_deltas, make_attention_probe, make_injection_patch, run_copy
from ..model.p3s_model import P3SModel
from .losses import attention_consistency_loss, ldm_loss, subject_weight
from .precision import (
    ATTENTION_OVERRIDE_KEY,
    TrainingPrecision,
    attention_override,
    casting_weights,
    training_precision,
    unet_compute_dtype,
)
from .prediction import noisy_input, prediction_target
from .settings import TrainingData

NUM_TIMESTEPS = 1000
_STATE_KEY = "p3s_training"


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The random stream of one epoch: a function of the seed and the epoch index only."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch)) % 2**63)


def step_losses(
    p3s: P3SModel,
    unet: nn.Module,
    sigmas: torch.Tensor,
    data: TrainingData,
    rows: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    drop: torch.Tensor,
    normalisation: str = "mean",
    maps: dict[str, torch.Tensor] | None = None,
    hint_rows: torch.Tensor | None = None,
    lac_layers: str = "last",
    copy_net: nn.Module | None = None,
    precision: TrainingPrecision | None = None,
    background_loss_weight: float = 1.0,
    targets: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_LDM, L_ac)`` for one batch (float32); the caller combines them.

    Runs the encoder (hint), the copy (capturing its attention outputs and its last-layer
    attention map) and the frozen U-Net with the injections (capturing its map). Pass ``maps``
    to keep those two maps (``"copy"``, ``"frozen"``: ``[B*H, N, T]`` probabilities).
    ``hint_rows``: the references whose hints the rows get (default: their own, ``rows``).
    ``lac_layers``: ``last`` = L_ac at the base's last cross-attention layer (output block 11 in
    SD1.5) [stated]; ``all`` = the mean over every cross-attention layer (16 in SD1.5, the paper's
    Table IV alternative) [reconstructed].
    ``copy_net``: the copy's module over ``unet`` (:meth:`P3SModel.copy_module`), built if None.
    ``precision``: the dtype the U-Nets' inputs are cast to (:func:`training_precision`).
    ``background_loss_weight`` < 1 weights ``L_LDM`` outside the rows' subject masks by it
    (:func:`.losses.subject_weight`, our addition); 1 = the paper's loss.
    ``targets``: ``(latents, contexts, ys)`` to denoise instead of the references' ``rows`` (prior
    preservation's class images; the hints still come from ``hint_rows``, no subject weighting).
    The ADM input ``y`` (SDXL) is the rows' own, the empty prompt's where dropped, the same for the
    copy and the frozen U-Net; None on SD1.5.
    """
    device = data.latents.device
    if targets is not None:
        x0, row_contexts, row_ys = targets
    else:
        x0, row_contexts = data.latents[rows], data.contexts[rows]
        row_ys = None if data.ys is None else data.ys[rows]
    noise, timesteps = noise.to(device), timesteps.to(device)
    sigma = sigmas[timesteps].view(-1, 1, 1, 1)
    cast = precision.inputs if precision is not None else (lambda tensor: tensor)
    x_in = cast(noisy_input(x0, noise, sigma, data.sigma_data))
    context = cast(torch.where(drop.to(device).view(-1, 1, 1), data.uncond.expand_as(row_contexts), row_contexts))
    y = None
    if row_ys is not None:
        y = cast(torch.where(drop.to(device).view(-1, 1), data.uncond_y.expand_as(row_ys), row_ys))
    t = data.unet_timestep(timesteps)

    hint_rows = rows if hint_rows is None else hint_rows
    latent_masks = None if data.latent_masks is None else data.latent_masks[hint_rows]
    hint = p3s.encoder(data.tokens[hint_rows], data.mask_grids[hint_rows], data.latents[hint_rows], latent_masks)
    maps = {} if maps is None else maps
    last = last_cross_attention(p3s)
    blocks = [last] if lac_layers == "last" else [layer_key(s) for s in p3s.sites]
    probe = {
        "patches_replace": {"attn2": {b: make_attention_probe(maps, _map_name("copy", b, last)) for b in blocks}},
        ATTENTION_OVERRIDE_KEY: attention_override,
    }
    captured = run_copy(p3s, x_in, t, context, hint, probe, base=unet, copy_net=copy_net, y=y)
    options = {
        "patches": {f"{a}_output_patch": [make_injection_patch(a, _STATE_KEY)] for a in ATTENTIONS},
        "patches_replace": {"attn2": {b: make_attention_probe(maps, _map_name("frozen", b, last)) for b in blocks}},
        _STATE_KEY: {"deltas": injection_deltas(p3s, captured, 1.0), "rows": None},
        ATTENTION_OVERRIDE_KEY: attention_override,
    }
    noise_pred = unet(x_in, t, context=context, y=y, transformer_options=options)
    weight = None
    if background_loss_weight != 1.0 and targets is None:
        weight = subject_weight(data.latent_masks[rows], background_loss_weight)
    l_ldm = ldm_loss(noise_pred.float(), prediction_target(data.prediction, x0, noise, sigma, data.sigma_data), weight)
    terms = [
        attention_consistency_loss(maps[_map_name("copy", b, last)], maps[_map_name("frozen", b, last)], normalisation)
        for b in blocks
    ]
    return l_ldm, torch.stack(terms).mean()


def last_cross_attention(p3s: P3SModel) -> tuple:
    """The layer key of ``p3s``'s base's last cross-attention layer, the one ``L_ac`` compares [stated]."""
    return last_layer_key(p3s.sites, base_named(p3s.base).LAST_CROSS_ATTENTION)


def _map_name(model: str, layer: tuple, last: tuple) -> str:
    """``copy`` / ``frozen`` for the last cross-attention layer, ``copy:input_1`` (``copy:input_4_1`` in a
    deeper block) for the others."""
    return model if layer == last else f"{model}:{'_'.join(str(part) for part in layer)}"


def pick_hint_rows(rows: torch.Tensor, references: int, source: str, gen: torch.Generator) -> torch.Tensor:
    """Whose hint each row gets: its own (``own``), or another reference's (``other``) [our addition].

    With its own latent in the hint the copy can read what it denoises: with ``hint_region``
    ``image`` that includes the very background, which sampling never gives; with ``subject``
    only the subject, which is what the references give at sampling. ``other`` makes the
    hint as foreign to the target as at sampling (needs 2+ references; with one, ``own``).
    """
    if source == "own" or references < 2:
        return rows
    return (rows + torch.randint(1, references, rows.shape, generator=gen)) % references


def reference_attention(
    p3s: P3SModel,
    unet: nn.Module,
    sigmas: torch.Tensor,
    data: TrainingData,
    index: int = 0,
    timestep: int = NUM_TIMESTEPS // 2,
    seed: int = 1234,
    precision: str = "auto",
    compute_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(frozen, copy)`` cross-attention probabilities ``[H, N, T]`` at the last cross-attention layer.

    One training-style forward on reference ``index`` (its own prompt, no dropout) at ``timestep``
    with fixed noise: what ``L_ac`` compares for that image, in training's precision path.
    """
    device = next(unet.parameters()).device
    data = data.to(device)
    sigmas = sigmas.detach().to(device=device, dtype=torch.float32)
    noise = torch.randn((1, *data.latents.shape[1:]), generator=torch.Generator().manual_seed(seed))
    maps: dict[str, torch.Tensor] = {}
    path = training_precision(precision, device, compute_dtype or unet_compute_dtype(unet))
    with torch.inference_mode(False), torch.no_grad(), path.context(device), casting_weights(p3s):
        step_losses(
            p3s,
            unet,
            sigmas,
            data,
            torch.tensor([index]),
            noise,
            torch.tensor([timestep]),
            torch.zeros(1, dtype=torch.bool),
            maps=maps,
            precision=path,
        )
    return maps["frozen"].float().cpu(), maps["copy"].float().cpu()


def evaluate_loss(
    p3s: P3SModel, unet: nn.Module, sigmas: torch.Tensor, data: TrainingData, gamma: float = 0.1, seed: int = 1234
) -> float:
    """Mean ``L_LDM + gamma L_ac`` over every image at 8 fixed timesteps and noises (no dropout)."""
    device = next(unet.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    data = data.to(device)
    sigmas = sigmas.detach().to(device=device, dtype=torch.float32)
    rows = torch.arange(data.latents.shape[0])
    totals = []
    path = training_precision("auto", device, unet_compute_dtype(unet))
    with torch.inference_mode(False), torch.no_grad(), path.context(device), casting_weights(p3s):
        for t in torch.linspace(50, NUM_TIMESTEPS - 50, 8).long():
            noise = torch.randn(data.latents.shape, generator=gen)
            timesteps = t.repeat(len(rows))
            drop = torch.zeros(len(rows), dtype=torch.bool)
            l_ldm, l_ac = step_losses(p3s, unet, sigmas, data, rows, noise, timesteps, drop, precision=path)
            totals.append(float(l_ldm + gamma * l_ac))
    return sum(totals) / len(totals)


def draw_step(
    shape: torch.Size, dropout: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    noise = torch.randn(shape, generator=gen)
    timesteps = torch.randint(0, NUM_TIMESTEPS, (shape[0],), generator=gen)
    drop = torch.rand(shape[0], generator=gen) < dropout
    return noise, timesteps, drop
