"""Tiny CLIP and DINO models written once per session, as single files and as snapshot folders."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def eval_models(tmp_path_factory):
    from devtools.launch_comfyui import declare_torchvision_ops

    declare_torchvision_ops()
    from devtools.tiny_eval_models import write_tiny_eval_set

    return write_tiny_eval_set(tmp_path_factory.mktemp("p3s_eval"))
