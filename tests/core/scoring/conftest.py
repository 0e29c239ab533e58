"""Tiny CLIP and DINO models written once per session, as single files and as snapshot folders."""

from __future__ import annotations

import pytest
import torch


def _fp16_exact(model):
    """Round the weights to fp16 in place, so a model loaded from the fp16 file equals this one."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.copy_(tensor.to(torch.float16).to(tensor.dtype))
    return model


@pytest.fixture(scope="session")
def eval_models(tmp_path_factory):
    from devtools.launch_comfyui import declare_torchvision_ops

    declare_torchvision_ops()
    from devtools.tiny_eval_models import tiny_clip, tiny_dino, write_single_file, write_snapshot

    root = tmp_path_factory.mktemp("p3s_eval")
    clip, dino = _fp16_exact(tiny_clip(seed=1)), _fp16_exact(tiny_dino(seed=2))
    return {
        "root": root,
        "clip": clip,
        "dino": dino,
        "clip_file": write_single_file(clip, root / "clip-vit-base-patch32.safetensors"),
        "dino_file": write_single_file(dino, root / "dino-vits16.safetensors"),
        "clip_snapshot": write_snapshot(clip, root / "clip-vit-base-patch32", tokenizer=True),
        "dino_snapshot": write_snapshot(dino, root / "dino-vits16"),
    }
