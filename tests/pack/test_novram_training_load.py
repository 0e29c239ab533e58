"""``--novram``: the frozen U-Net is fully loaded for Fine-tune, as ComfyUI's trainer asks.

ComfyUI turns ``force_full_load`` into a 0.1-byte lowvram budget under ``NO_VRAM`` (the check
comes after it), which would leave every frozen weight on the CPU to be streamed per op in both
passes and every checkpoint recompute. The ``meta`` device stands in for CUDA; ComfyUI's VRAM
state and free memory are patched as ComfyUI sets them on a card under ``--novram``.
"""

from __future__ import annotations

import pytest
import torch

from devtools.pack_modules import import_pack_module
from devtools.tiny_models import tiny_sd15_patcher

placement = import_pack_module("nodes.p3s_placement")
META = torch.device("meta")


@pytest.fixture
def novram(monkeypatch):
    import comfy.model_management as mm

    monkeypatch.setattr(mm, "vram_state", mm.VRAMState.NO_VRAM)
    monkeypatch.setattr(
        mm, "get_free_memory", lambda dev=None, torch_free_too=False: (8 * 2**30,) * 2 if torch_free_too else 8 * 2**30
    )
    yield mm
    mm.unload_all_models()


def meta_base():
    """A tiny base whose load device is ``meta`` (its weights' values are lost when loaded there)."""
    import comfy.model_patcher

    cpu = tiny_sd15_patcher(seed=0)
    return comfy.model_patcher.ModelPatcher(cpu.model, load_device=META, offload_device=torch.device("cpu"))


def test_novram_loads_the_frozen_unet_fully_for_training(novram, monkeypatch):
    model = meta_base()
    streamed = []
    real_stream = novram.get_offload_stream
    monkeypatch.setattr(novram, "get_offload_stream", lambda device: streamed.append(device) or real_stream(device))
    placement.load_for_training(model)
    unet = model.model.diffusion_model
    left = [name for name, p in unet.named_parameters() if p.device != META]
    assert left == [], f"{len(left)} frozen weights left on the CPU, e.g. {left[:3]}"
    assert not model.model.model_lowvram
    assert not any(getattr(m, "comfy_cast_weights", False) for m in unet.modules()), "no op casts per call"
    x = torch.randn(1, 4, 8, 8, device=META)
    unet(x, torch.ones(1, device=META), context=torch.randn(1, 7, 32, device=META))
    assert streamed == [], "no frozen weight copied to the device per op"


def test_where_the_full_load_runs_out_of_memory_the_lowvram_load_stays(novram, monkeypatch):
    import comfy.model_patcher

    model = meta_base()
    real = comfy.model_patcher.ModelPatcher.partially_load

    def out_of_memory_when_loading_it_all(patcher, device, extra_memory=0, **kwargs):
        if extra_memory >= model.model_size():  # the full load: ComfyUI's own lowvram load asks 0.1 byte
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(patcher, device, extra_memory, **kwargs)

    monkeypatch.setattr(comfy.model_patcher.ModelPatcher, "partially_load", out_of_memory_when_loading_it_all)
    placement.load_for_training(model)
    assert model.model.model_lowvram, "ComfyUI's own lowvram load: slower, but it trains"
    assert any(getattr(m, "comfy_cast_weights", False) for m in model.model.diffusion_model.modules())
