"""The base architectures the pack knows, and the one function that picks a MODEL's (:func:`base_for_model`).

Each base is a module with the same names (:mod:`.sd15`, :mod:`.sdxl`); code that needs a
base's facts asks the module picked here, never tests for a base by name.
"""

from __future__ import annotations

from types import ModuleType

from ..errors import P3SInputError
from . import sd15, sdxl

BASE_MODULES: tuple[ModuleType, ...] = (sd15, sdxl)
"""Every supported base, SD1.5 (the paper's) first."""
BASES = {b.NAME: b.MODELSPEC_ARCHITECTURE for b in BASE_MODULES}
"""Base name -> the base part of a file's ``modelspec.architecture``."""
DEFAULT_BASE = sd15.NAME
"""The base a file without ``p3s.base`` (or a config without ``architecture``) was made for."""

_COMFY_CONFIG_MODULE = "comfy.supported_models"


def attention_map_layers() -> list[str]:
    """Every base's Attention Maps layers, SD1.5's first (ComfyUI block keys mean the same block in each)."""
    return list(dict.fromkeys(layer for base in BASE_MODULES for layer in base.ATTENTION_MAP_LAYERS))


def supported_names() -> str:
    """``SD1.5, SDXL``: the supported bases as messages name them."""
    return ", ".join(b.DISPLAY_NAME for b in BASE_MODULES)


def base_named(name: str) -> ModuleType:
    """The base module saved as ``name`` (``p3s.base``), or a ``P3SInputError`` naming the known ones."""
    for base in BASE_MODULES:
        if name == base.NAME:
            return base
    raise P3SInputError(f"Unknown base architecture {name!r}: this pack supports {', '.join(BASES)}.")


def base_for_architecture(architecture: str) -> ModuleType | None:
    """The base whose P3S config ``architecture`` is ``architecture`` (``p3s-sd15``), or None."""
    return next((b for b in BASE_MODULES if architecture == b.ARCHITECTURE), None)


def base_for_model(model: object) -> ModuleType:
    """The base module of a ComfyUI MODEL (``ModelPatcher``), from the model config class ComfyUI built.

    A config that is (a subclass of) a base's ``comfy.supported_models`` class is that base, as
    ``isinstance`` would say, read from the class's MRO so no host import is needed. Anything else
    is refused with a ``P3SInputError`` naming the supported bases. The U-Net's layout is the
    base's own check (``check_layout``).
    """
    config = getattr(getattr(model, "model", None), "model_config", None)
    lineage = {c.__qualname__ for c in type(config).__mro__ if c.__module__ == _COMFY_CONFIG_MODULE}
    for base in BASE_MODULES:
        if base.COMFY_MODEL_CONFIG in lineage:
            return base
    examples = " or ".join(f"{b.DISPLAY_NAME} (e.g. {b.EXAMPLE_CHECKPOINT})" for b in BASE_MODULES)
    raise P3SInputError(
        f"P3S works with {supported_names()} base models only; this MODEL is {type(config).__name__}. "
        f"Load an {examples} checkpoint as the base model."
    )
