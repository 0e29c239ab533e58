"""Training memory per scope, and scope ``auto``: the richest scope that fits (our addition).

The estimate of a training run of a scope, in bytes:

* the P3S model's own parameters in float32 with their gradients and AdamW's two moments
  (16 bytes per own parameter; own = the scope's copy weights plus the injection layers, hint
  ZeroConv and encoder, which every scope trains);
* the activations kept for backward by the copy's and the frozen U-Net's passes, taken as the
  base's ``ACTIVATION_BYTES_PER_LATENT_PIXEL`` per latent pixel and image in 16-bit autocast
  (twice that in float32, its ``CHECKPOINTING_SAVING`` times less with gradient checkpointing).
  SD1.5's coefficient is an estimate for 512 px (4096 latent pixels: about 8 GB for both
  passes), not a measurement on every attention backend; SDXL's is SD1.5's scaled by what each
  full-size U-Net's training step keeps for backward, measured side by side
  (:mod:`p3s_core.bases.sdxl`). A margin of :data:`MARGIN` is added on top. Where the estimate
  is short, the Fine-tune's out-of-memory message says what to lower.

The frozen base U-Net's weights are counted only when they are not on the device yet. ``auto``
picks the first scope of :data:`~.shared_copy.SCOPES` (richest first) whose estimate fits the
free memory, else the lightest.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType

import torch
from torch import nn

from ..bases import sd15
from ..bases.unet_sites import ATTENTIONS, injection_sites
from ..model.injection_layers import injection_parameter_count, resolve_injection_rank
from ..model.shared_copy import SCOPES, attention_paths, lora_paths
from ..model.subject_encoder import SubjectEncoder

BYTES_PER_OWN_PARAMETER = 16  # float32 weight + gradient + AdamW exp_avg + exp_avg_sq
MARGIN = 1.15


def p3s_layer_parameters(unet: nn.Module, encoder_config: Mapping, injection_rank: int) -> int:
    """The parameters a model of any scope trains beside its copy: encoder, hint ZeroConv, injection layers."""
    with torch.device("meta"):
        encoder = sum(p.numel() for p in SubjectEncoder.from_config(dict(encoder_config)).parameters())
    latent, inputs = int(encoder_config.get("latent_channels", 4)), int(unet.in_channels)
    hint_conv = latent * inputs + inputs
    rank = resolve_injection_rank(injection_rank)
    injection = sum(len(ATTENTIONS) * injection_parameter_count(s.channels, rank) for s in injection_sites(unet))
    return encoder + hint_conv + injection


def own_parameter_counts(unet: nn.Module, p3s_layers: int, lora_rank: int) -> dict[str, int]:
    """Parameters a P3S model of each scope owns over ``unet`` (``p3s_layers``: injection + encoder + hint conv)."""
    full = sum(p.numel() for p in unet.parameters())
    attention = sum(p.numel() for path in attention_paths(unet) for p in unet.get_submodule(path).parameters())
    lora = 0
    for path in lora_paths(unet):
        layer = unet.get_submodule(path)
        if isinstance(layer, nn.Linear):
            lora += lora_rank * (layer.in_features + layer.out_features)
        else:
            kernel = layer.kernel_size[0] * layer.kernel_size[1]
            lora += lora_rank * (layer.in_channels * kernel + layer.out_channels)
    copy = {"full": full, "attention": attention, "lora": lora, "injection": 0}
    return {scope: copy[scope] + p3s_layers for scope in SCOPES}


def training_bytes(
    own_parameters: int,
    latent_pixels: int,
    batch_size: int,
    half_precision: bool,
    checkpointing: bool,
    base_bytes_to_load: int = 0,
    base: ModuleType = sd15,
) -> int:
    """Estimated peak memory of training a model that owns ``own_parameters`` on ``base`` (a
    :mod:`p3s_core.bases` module; see the module docstring)."""
    activations = base.ACTIVATION_BYTES_PER_LATENT_PIXEL * latent_pixels * batch_size
    activations = activations * (1 if half_precision else 2) / (base.CHECKPOINTING_SAVING if checkpointing else 1)
    return int(MARGIN * (own_parameters * BYTES_PER_OWN_PARAMETER + activations + base_bytes_to_load))


def choose_scope(free_bytes: int, needs: Mapping[str, int]) -> str:
    """The richest scope whose need fits ``free_bytes``; the lightest when none does."""
    for scope in SCOPES:
        if needs[scope] <= free_bytes:
            return scope
    return SCOPES[-1]


def scope_needs(
    unet: nn.Module,
    layer_parameters: int,
    lora_rank: int,
    latent_pixels: int,
    batch_size: int,
    half_precision: bool,
    checkpointing: bool,
    base_bytes_to_load: int = 0,
    base: ModuleType = sd15,
) -> dict[str, int]:
    """:func:`training_bytes` of every scope over ``unet`` of ``base`` (``layer_parameters``:
    :func:`p3s_layer_parameters`)."""
    return {
        name: training_bytes(count, latent_pixels, batch_size, half_precision, checkpointing, base_bytes_to_load, base)
        for name, count in own_parameter_counts(unet, layer_parameters, lora_rank).items()
    }


def auto_scope(free_bytes: int, needs: Mapping[str, int], device: object) -> tuple[str, str]:
    """``auto``'s pick for ``free_bytes`` on ``device``, and the line that says why."""
    chosen = choose_scope(free_bytes, needs)
    fits = "fits" if needs[chosen] <= free_bytes else "does not fit either; the lightest"
    line = (
        f"scope auto -> {chosen} (free {free_bytes / 2**30:.2f} GB on {device}, {chosen} needs about "
        f"{needs[chosen] / 2**30:.2f} GB: {fits})"
    )
    return chosen, line
