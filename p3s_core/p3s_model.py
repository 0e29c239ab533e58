"""The P3S model: trainable U-Net copy, hint ZeroConv, subject encoder, 32 injection layers.

[stated] "a trainable copy of U-Net"; "we add the hidden states both in self and cross
attention layers to the original model through a zero convolution".
[reconstructed] The copy is a full copy of the SD1.5 U-Net (decoder included) fed
``x_t + hint_conv(hint)``; every transformer block gets one zero-initialised ``Linear`` for
its attn1 output and one for its attn2 output. All zero layers start at zero, so an untrained
P3S model leaves the frozen model's output unchanged.

State-dict keys are stable: ``copy.*`` (the U-Net copy, ComfyUI's ``diffusion_model`` names),
``hint_conv.*``, ``encoder.*``, ``injection.<site>.<attn1|attn2>.*`` (e.g.
``injection.output_11.attn2.weight``). ``config`` is a JSON-able dict that, with the base
U-Net, rebuilds the same module (:func:`p3s_model_from_tensors`).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .errors import P3SInputError
from .subject_encoder import DEFAULT_ENCODER_CONFIG, SubjectEncoder
from .unet_layout import ATTENTIONS, InjectionSite, check_sd15_layout

FORMAT_VERSION = 1
ARCHITECTURE = "p3s-sd15"


def _zero_linear(channels: int) -> nn.Linear:
    layer = nn.Linear(channels, channels)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _detached_copy(unet: nn.Module, state_dict: dict[str, torch.Tensor] | None) -> nn.Module:
    """A deep copy of ``unet`` whose weights are normal trainable tensors, without host hooks."""
    with torch.inference_mode(False):
        clone = copy.deepcopy(unet)
        for module in clone.modules():
            # ComfyUI's low-VRAM mode hangs per-module weight hooks on the live model.
            if hasattr(module, "weight_function"):
                module.weight_function = []
                module.bias_function = []
            if hasattr(module, "prev_comfy_cast_weights"):
                module.comfy_cast_weights = module.prev_comfy_cast_weights
                del module.prev_comfy_cast_weights
            for name, param in list(module.named_parameters(recurse=False)):
                # Weights made under ComfyUI's inference mode cannot be trained: re-create those.
                data = param.detach().clone() if param.is_inference() else param.detach()
                setattr(module, name, nn.Parameter(data, requires_grad=True))
        if state_dict is not None:
            clone.load_state_dict(state_dict, strict=True)
    return clone


class P3SModel(nn.Module):
    """Everything P3S learns; the frozen base U-Net is not part of it."""

    def __init__(self, copy_unet: nn.Module, sites: list[InjectionSite], encoder: SubjectEncoder):
        super().__init__()
        self.copy = copy_unet
        self.sites = list(sites)
        latent_channels = encoder.config["latent_channels"]
        self.hint_conv = nn.Conv2d(latent_channels, int(copy_unet.in_channels), 1)
        nn.init.zeros_(self.hint_conv.weight)
        nn.init.zeros_(self.hint_conv.bias)
        self.encoder = encoder
        self.injection = nn.ModuleDict(
            {s.key: nn.ModuleDict({a: _zero_linear(s.channels) for a in ATTENTIONS}) for s in self.sites}
        )

    @classmethod
    def from_base(
        cls,
        base_unet: nn.Module,
        encoder_config: dict | None = None,
        base_state_dict: dict[str, torch.Tensor] | None = None,
        dtype: torch.dtype | None = None,
    ) -> P3SModel:
        """An untrained P3S model: copy of ``base_unet`` (or of ``base_state_dict`` in its shape).

        ``dtype``: every tensor's dtype (e.g. the base's compute dtype for an fp8-stored base:
        the copy must not be fp8); None = the copy keeps the base's dtype, the rest float32.
        """
        sites = check_sd15_layout(base_unet)
        with torch.inference_mode(False):
            encoder = SubjectEncoder.from_config(encoder_config or {})
            model = cls(_detached_copy(base_unet, base_state_dict), sites, encoder)
            return model.to(device=next(model.copy.parameters()).device, dtype=dtype)

    @property
    def config(self) -> dict:
        """JSON-able description for saving; see :func:`p3s_model_from_tensors`."""
        return {
            "format_version": FORMAT_VERSION,
            "architecture": ARCHITECTURE,
            "encoder": dict(self.encoder.config),
            "sites": [s.key for s in self.sites],
        }

    def site_layer(self, site: InjectionSite, attn: str) -> nn.Linear:
        """The injection layer of one site and attention (``attn1`` or ``attn2``)."""
        return self.injection[site.key][attn]

    def injection_is_zero(self) -> bool:
        """True while every injection layer is still exactly zero (output equals the plain model)."""
        return all(not p.any() for p in self.injection.parameters())


def p3s_model_from_tensors(
    base_unet: nn.Module, tensors: dict[str, torch.Tensor], config: dict, dtype: torch.dtype | None = None
) -> P3SModel:
    """Rebuild a saved P3S model on ``base_unet``'s structure and load ``tensors`` into it.

    ``dtype``: the model's dtype before the file's weights go in (see :meth:`P3SModel.from_base`).
    """
    if config.get("architecture", ARCHITECTURE) != ARCHITECTURE:
        raise P3SInputError(
            f"This file holds a '{config.get('architecture')}' model, not a P3S SD1.5 model ({ARCHITECTURE})."
        )
    version = int(config.get("format_version", FORMAT_VERSION))
    if version > FORMAT_VERSION:
        raise P3SInputError(
            f"This P3S file has format version {version}; this pack reads up to {FORMAT_VERSION}. Update the pack."
        )
    copy_sd = {k[len("copy.") :]: v for k, v in tensors.items() if k.startswith("copy.")}
    if not copy_sd:
        raise P3SInputError("This P3S file holds no U-Net copy (no 'copy.*' tensors); it is not a P3S model.")
    model = P3SModel.from_base(base_unet, config.get("encoder", DEFAULT_ENCODER_CONFIG), dtype=dtype)
    expected = [s.key for s in model.sites]
    if list(config.get("sites", expected)) != expected:
        raise P3SInputError("This P3S file was made for a U-Net with other transformer blocks than this base model.")
    try:
        with torch.inference_mode(False):
            missing, unexpected = model.load_state_dict(tensors, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise P3SInputError(
            f"This P3S file does not fit the base model ({str(err).splitlines()[-1].strip()}). "
            "Use the SD1.5 base model (and CLIP vision model) it was made with."
        ) from err
    if missing or unexpected:
        raise P3SInputError(
            f"This P3S file does not fit the model: {len(missing)} tensors missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}). Was it saved for another base model?"
        )
    return model
