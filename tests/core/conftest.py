"""Fixtures of the tiny SD1.5-shaped model tests (a module may override them with its own)."""

from __future__ import annotations

import pytest
import torch

from devtools.tiny_models import tiny_sd15_patcher

from .p3s_support import ENCODER, import_pack_module, sample


@pytest.fixture(scope="module")
def base():
    """A tiny SD1.5-shaped ModelPatcher, one per test module."""
    return tiny_sd15_patcher(seed=0)


@pytest.fixture(scope="module")
def sigmas(base):
    """The base's noise levels, as training reads them."""
    return base.get_model_object("model_sampling").sigmas


@pytest.fixture(scope="module")
def plain_output(base):
    """The plain model's sampler output with the fixed seed of :func:`sample`."""
    return sample(base)


@pytest.fixture
def p3s(base):
    """An untrained P3S model of ``base``."""
    return import_pack_module("nodes.p3s_patching").new_p3s_model(base, ENCODER)


@pytest.fixture
def hint():
    return torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
