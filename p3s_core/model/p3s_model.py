"""The P3S model: the trainable copy of the U-Net, hint ZeroConv, subject encoder, injection layers
(one for attn1 and one for attn2 of every transformer block: 32 on SD1.5).

[stated] "a trainable copy of U-Net"; "we add the hidden states both in self and cross
attention layers to the original model through a zero convolution".
[reconstructed] The copy is fed ``x_t + hint_conv(hint)``; every transformer block gets one
zero-initialised ``Linear`` for its attn1 output and one for its attn2 output. All zero layers
start at zero, so an untrained P3S model leaves the frozen model's output unchanged.
Our addition: ``injection_rank`` r > 0 makes those layers low-rank (:mod:`.injection_layers`).

Our addition: the model owns only what its ``scope`` trains; the rest of the copy is the base
U-Net's own modules (see :mod:`.shared_copy`): ``full`` owns a whole U-Net, ``attention`` its
attention layers, ``lora`` low-rank adapters, ``injection`` no copy weights at all. The copy's
pass is :meth:`P3SModel.copy_module` of the base U-Net being run.

State-dict keys are stable: ``copy.<U-Net path>.*`` (ComfyUI's ``diffusion_model`` names; a
LoRA adapter adds ``.down.weight`` / ``.up.weight`` to its layer's path), ``hint_conv.*``,
``encoder.*``, ``injection.<site>.<attn1|attn2>.*`` (e.g. ``injection.output_11.attn2.weight``;
``.down.weight`` / ``.up.weight`` / ``.up.bias`` for a low-rank layer).
``config`` is a JSON-able dict that, with the base U-Net, rebuilds the same module
(:func:`p3s_model_from_tensors`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..bases.registry import DEFAULT_BASE, base_for_architecture, base_named
from ..bases.unet_sites import ATTENTIONS, InjectionSite
from ..errors import P3SInputError
from .base_fingerprint import base_signature, fingerprint, signatures_match
from .injection_layers import (
    DEFAULT_INJECTION_RANK,
    output_is_zero,
    resolve_injection_rank,
    zero_injection_layer,
)
from .shared_copy import (
    DEFAULT_LORA_ALPHA,
    DEFAULT_LORA_RANK,
    LoRAAdapter,
    attention_paths,
    check_scope,
    copy_pass_module,
    fresh_module,
    lora_paths,
    sparse_tree,
)
from .subject_encoder import DEFAULT_ENCODER_CONFIG, SubjectEncoder

FORMAT_VERSION = 2
"""1: a whole copy in every file; 2: only what the model owns, with its scope and base fingerprint."""


def _own_state(base_unet: nn.Module, state: Mapping[str, torch.Tensor] | None) -> Mapping[str, torch.Tensor]:
    return state if state is not None else base_unet.state_dict()


class P3SModel(nn.Module):
    """Everything P3S learns; the frozen base U-Net and the copy's shared modules are not part of it."""

    def __init__(
        self,
        own_copy: dict[str, nn.Module],
        sites: list[InjectionSite],
        encoder: SubjectEncoder,
        in_channels: int,
        scope: str = "full",
        lora: dict | None = None,
        injection_rank: int = 0,
        base: str = DEFAULT_BASE,
    ):
        super().__init__()
        self.base = base_named(base).NAME
        self.scope = check_scope(scope)
        self.injection_rank = resolve_injection_rank(injection_rank)
        self.lora = dict(lora) if scope == "lora" else None
        self.copy_paths = list(own_copy)
        self.base_signature: list[float] = []
        if scope == "full":
            self.copy = own_copy[""]
        elif own_copy:
            self.copy = sparse_tree(own_copy)
        self.sites = list(sites)
        latent_channels = encoder.config["latent_channels"]
        self.hint_conv = nn.Conv2d(latent_channels, int(in_channels), 1)
        nn.init.zeros_(self.hint_conv.weight)
        nn.init.zeros_(self.hint_conv.bias)
        self.encoder = encoder
        self.injection = nn.ModuleDict(
            {
                s.key: nn.ModuleDict({a: zero_injection_layer(s.channels, self.injection_rank) for a in ATTENTIONS})
                for s in self.sites
            }
        )

    @classmethod
    def from_base(
        cls,
        base_unet: nn.Module,
        encoder_config: dict | None = None,
        base_state_dict: Mapping[str, torch.Tensor] | None = None,
        scope: str = "full",
        lora_rank: int = DEFAULT_LORA_RANK,
        lora_alpha: float = DEFAULT_LORA_ALPHA,
        dtype: torch.dtype | None = None,
        injection_rank: int = DEFAULT_INJECTION_RANK,
        base: str = DEFAULT_BASE,
    ) -> P3SModel:
        """An untrained P3S model of ``scope`` over ``base_unet`` (own weights from ``base_state_dict``).

        ``base``: the base architecture's name (:mod:`..bases.registry`), whose layout check
        gives the injection sites.

        ``injection_rank``: 0 = full ``C x C`` injection layers (the paper), r > 0 low-rank ones,
        -1 = the pack's rank 64 (our addition, :mod:`.injection_layers`).
        ``base_state_dict``: the base's own (unpatched) weights, by default ``base_unet``'s.
        Own tensors are built on the CPU from those values, never copied from live modules; own
        copy weights take ``dtype`` (default: the base's).
        """
        check_scope(scope)
        injection_rank = resolve_injection_rank(injection_rank)
        sites = base_named(base).check_layout(base_unet)
        if scope == "lora" and not (int(lora_rank) >= 1 and float(lora_alpha) > 0):
            raise P3SInputError(f"LoRA rank must be >= 1 and alpha > 0 (got rank {lora_rank}, alpha {lora_alpha}).")
        with torch.inference_mode(False):
            encoder = SubjectEncoder.from_config(encoder_config or {})
            state = _own_state(base_unet, base_state_dict)
            own: dict[str, nn.Module] = {}
            lora = None
            if scope == "full":
                own[""] = fresh_module(base_unet, state, dtype=dtype)
            elif scope == "attention":
                for path in attention_paths(base_unet):
                    own[path] = fresh_module(base_unet.get_submodule(path), state, path + ".", dtype)
            elif scope == "lora":
                lora = {"rank": int(lora_rank), "alpha": float(lora_alpha)}
                for path in lora_paths(base_unet):
                    own[path] = LoRAAdapter(base_unet.get_submodule(path), lora["rank"], lora["alpha"])
            model = cls(own, sites, encoder, int(base_unet.in_channels), scope, lora, injection_rank, base)
        model.base_signature = base_signature(state)
        return model

    def copy_module(self, base_unet: nn.Module) -> nn.Module:
        """The module the copy's pass runs: own U-Net, a shadow of ``base_unet``, or ``base_unet`` itself."""
        if self.scope == "full":
            return self.copy
        own = {path: self.copy.get_submodule(path) for path in self.copy_paths}
        return copy_pass_module(self.scope, base_unet, own, lora=self.scope == "lora")

    @property
    def config(self) -> dict:
        """JSON-able description for saving; see :func:`p3s_model_from_tensors`."""
        config = {
            "format_version": FORMAT_VERSION,
            "architecture": base_named(self.base).ARCHITECTURE,
            "encoder": dict(self.encoder.config),
            "sites": [s.key for s in self.sites],
            "scope": self.scope,
            "injection_rank": self.injection_rank,
        }
        if self.lora is not None:
            config["lora"] = dict(self.lora)
        if self.base_signature:
            config["base_signature"] = list(self.base_signature)
            config["base_fingerprint"] = fingerprint(self.base_signature)
        return config

    def site_layer(self, site: InjectionSite, attn: str) -> nn.Module:
        """The injection layer of one site and attention (``attn1`` or ``attn2``)."""
        return self.injection[site.key][attn]

    def injection_is_zero(self) -> bool:
        """True while every injection layer is still exactly zero (output equals the plain model)."""
        return all(output_is_zero(layer) for site in self.injection.values() for layer in site.values())


def check_same_base(config: Mapping, base_state: Mapping[str, torch.Tensor]) -> list[float]:
    """The base's signature; a :class:`P3SInputError` naming both fingerprints if ``config``'s differs.

    Files without a signature (format 1, SD1.5 only) are accepted on any SD1.5 base: they hold a whole copy.
    """
    signature = base_signature(base_state)
    saved = config.get("base_signature")
    if saved and not signatures_match(saved, signature):
        raise P3SInputError(
            f"This P3S model was trained on another base U-Net (fingerprint {fingerprint(saved)}) than this "
            f"MODEL (fingerprint {fingerprint(signature)}); its shared weights are that base's. Load the "
            "checkpoint it was trained on, or train a P3S model for this one."
        )
    return signature


def check_architecture(config: Mapping, base: str) -> None:
    """A ``P3SInputError`` unless ``config`` is a P3S model for ``base``; a P3S model of another base
    is named with this one (a config without ``architecture``, format 1, is SD1.5's)."""
    here = base_named(base)
    architecture = config.get("architecture", base_named(DEFAULT_BASE).ARCHITECTURE)
    if architecture == here.ARCHITECTURE:
        return
    other = base_for_architecture(str(architecture))
    if other is not None:
        raise P3SInputError(
            f"This P3S model was trained on an {other.DISPLAY_NAME} base ({other.ARCHITECTURE}), but this MODEL is "
            f"{here.DISPLAY_NAME} ({here.ARCHITECTURE}): load a P3S model trained on an {here.DISPLAY_NAME} base, "
            f"or train one for this MODEL."
        )
    raise P3SInputError(
        f"This file holds a '{architecture}' model, not a P3S {here.DISPLAY_NAME} model ({here.ARCHITECTURE})."
    )


def p3s_model_from_tensors(
    base_unet: nn.Module,
    tensors: Mapping[str, torch.Tensor],
    config: Mapping,
    base_state_dict: Mapping[str, torch.Tensor] | None = None,
    dtype: torch.dtype | None = None,
    base: str = DEFAULT_BASE,
) -> P3SModel:
    """Rebuild a saved P3S model on ``base_unet`` (of architecture ``base``) and load ``tensors`` into it.

    Format 1 (a whole copy, no scope) rebuilds a ``full`` model; format 2 the saved scope,
    after checking that ``base_unet`` is the base it was trained on (:func:`check_same_base`).
    ``dtype``: of the own copy weights (default the base's; float32 to resume training exactly).
    """
    check_architecture(config, base)
    version = int(config.get("format_version", FORMAT_VERSION))
    if version > FORMAT_VERSION:
        raise P3SInputError(
            f"This P3S file has format version {version}; this pack reads up to {FORMAT_VERSION}. Update the pack."
        )
    scope = str(config.get("scope", "full"))
    check_scope(scope)
    copy_sd = {k[len("copy.") :]: v for k, v in tensors.items() if k.startswith("copy.")}
    if scope != "injection" and not copy_sd:
        raise P3SInputError(
            f"This P3S file holds no U-Net copy (no 'copy.*' tensors) for its scope {scope!r}; it is not a P3S model."
        )
    base_state = _own_state(base_unet, base_state_dict)
    signature = check_same_base(config, base_state)
    lora = dict(config.get("lora") or {})
    try:
        model = P3SModel.from_base(
            base_unet,
            config.get("encoder", DEFAULT_ENCODER_CONFIG),
            {**base_state, **copy_sd} if scope == "full" else base_state,
            scope=scope,
            lora_rank=int(lora.get("rank", DEFAULT_LORA_RANK)),
            lora_alpha=float(lora.get("alpha", DEFAULT_LORA_ALPHA)),
            dtype=dtype,
            injection_rank=int(config.get("injection_rank", 0)),
            base=base,
        )
    except P3SInputError as err:
        raise P3SInputError(f"This P3S file does not fit the base model: {err}") from err
    model.base_signature = signature
    expected = [s.key for s in model.sites]
    if list(config.get("sites", expected)) != expected:
        raise P3SInputError("This P3S file was made for a U-Net with other transformer blocks than this base model.")
    try:
        with torch.inference_mode(False):
            missing, unexpected = model.load_state_dict(dict(tensors), strict=False)
    except RuntimeError as err:  # shape mismatches
        raise P3SInputError(
            f"This P3S file does not fit the base model ({str(err).splitlines()[-1].strip()}). "
            f"Use the {base_named(base).DISPLAY_NAME} base model (and CLIP vision model) it was made with."
        ) from err
    if missing or unexpected:
        raise P3SInputError(
            f"This P3S file does not fit the model: {len(missing)} tensors missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}). Was it saved for another base model?"
        )
    return model
