"""The base architectures the pack knows, by the name saved in model files (``p3s.base``)."""

from __future__ import annotations

from . import sd15

BASES = {sd15.NAME: sd15.MODELSPEC_ARCHITECTURE}
"""Base name -> the base part of a file's ``modelspec.architecture``."""
DEFAULT_BASE = sd15.NAME
"""The base a file without ``p3s.base`` was made for, and the one the nodes build on."""
