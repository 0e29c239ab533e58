"""P3S Fine-tune out of GPU memory, emulated on the CPU: the pack's error says what to do, and the
memory is freed before it is raised; ``auto`` counts the memory the models training offloads."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from devtools.pack_modules import import_pack_module, pack_core
from devtools.tiny_models import tiny_sd15_patcher

from .test_finetune_node import StandinClipVision, run

node = import_pack_module("nodes.finetune_node")
errors = pack_core(node).errors
loop = pack_core(node).training.loop


@pytest.fixture
def p3s_folder(tmp_path, monkeypatch):
    import comfy.model_management
    import folder_paths

    comfy.model_management.unload_all_models()  # no model of an earlier test counted as offloadable
    monkeypatch.setitem(folder_paths.folder_names_and_paths, node.P3S_FOLDER, ([str(tmp_path)], {".safetensors"}))
    return tmp_path


def test_out_of_memory_frees_first_then_says_what_to_do(p3s_folder, monkeypatch):
    """The step's forward allocates an activation and runs out of memory at the second step, as
    ``torch.cuda.OutOfMemoryError`` would; ComfyUI's cache is emptied only once nothing holds it."""
    import comfy.model_management

    real_losses = loop.step_losses
    held, calls, alive_at_cleanup = [], [], []

    def losses_then_out_of_memory(*args, **kwargs):
        calls.append(1)
        if len(calls) < 2:
            return real_losses(*args, **kwargs)
        activation = torch.empty(2**20)  # what the traceback of a real OOM keeps: activations, the model
        held.append(weakref.ref(activation))
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")

    made = []
    new_p3s_model = node.new_p3s_model
    monkeypatch.setattr(node, "new_p3s_model", lambda *a: made.append(weakref.ref(m := new_p3s_model(*a))) or m)
    monkeypatch.setattr(loop, "step_losses", losses_then_out_of_memory)
    real_empty = comfy.model_management.soft_empty_cache

    def empty_cache(*args, **kwargs):
        if held:  # every cleanup after the out-of-memory error
            gc.collect()
            alive_at_cleanup.append([ref() is not None for ref in (*held, *made)])
        return real_empty(*args, **kwargs)

    monkeypatch.setattr(comfy.model_management, "soft_empty_cache", empty_cache)
    with pytest.raises(errors.P3SInputError) as raised:
        run("oom.safetensors", epochs=3, scope="attention")
    message = str(raised.value)
    assert "out of memory at step 2 of 3" in message
    for advice in ("gradient_checkpointing", "lora", "injection"):
        assert advice in message, advice
    assert "full" not in message.split("To fit")[-1], "only lighter scopes are offered"
    assert raised.value.__context__ is None and raised.value.__cause__ is None, "no traceback holds the step"
    assert alive_at_cleanup and not any(any(alive) for alive in alive_at_cleanup), "freed before the cache is"
    assert list(p3s_folder.iterdir()) == [], "nothing written"


def test_the_advice_offers_only_what_would_help():
    settings = pack_core(node).training.settings.TrainSettings(batch_size=2)
    advice = pack_core(node).training.finetune_run.out_of_memory_advice
    text = advice(settings, "lora", 512, 7, 60, checkpoints=[p3s_folder_path("s_e0002.safetensors")])
    assert "at step 7 of 60" in text and "Checkpoints kept: s_e0002.safetensors" in text
    assert "lower the resolution (now 512 px" in text and "lower batch_size (now 2)" in text
    assert "choose a lighter scope (injection)" in text and "gradient_checkpointing on" in text
    checkpointed = pack_core(node).training.settings.TrainSettings(gradient_checkpointing=True)
    small = advice(checkpointed, "injection", 256, 1, 1)
    ways = small.split("To fit")[-1]
    assert "gradient_checkpointing" not in ways and "lighter scope" not in ways and "resolution" not in ways
    assert "batch_size" not in ways


def p3s_folder_path(name: str):
    from pathlib import Path

    return Path("/models/p3s") / name


def test_auto_names_its_estimate_when_out_of_memory(p3s_folder, monkeypatch):
    import comfy.model_management

    monkeypatch.setattr(loop, "step_losses", lambda *a, **k: (_ for _ in ()).throw(torch.OutOfMemoryError("OOM")))
    real = comfy.model_management.get_free_memory
    monkeypatch.setattr(
        comfy.model_management,
        "get_free_memory",
        lambda dev=None, torch_free_too=False: real(dev, True) if torch_free_too else 10 * 2**30,
    )
    with pytest.raises(errors.P3SInputError) as raised:
        run("", epochs=1, scope="auto")
    message = str(raised.value)
    assert "scope auto -> full (free 10.00 GB" in message and "needs about" in message


def test_auto_counts_the_memory_of_the_models_training_offloads(p3s_folder, monkeypatch):
    """CLIP, CLIP vision and the VAE are still loaded when ``auto`` measures; training offloads them."""
    import comfy.model_management

    other = tiny_sd15_patcher(seed=1)  # another model loaded on the device (a VAE, a CLIP)
    comfy.model_management.load_models_gpu([other])
    loaded = next(m for m in comfy.model_management.current_loaded_models if m.model is other)
    other_bytes = loaded.model_loaded_memory()
    assert other_bytes > 0
    real = comfy.model_management.get_free_memory
    monkeypatch.setattr(
        comfy.model_management,
        "get_free_memory",
        lambda dev=None, torch_free_too=False: real(dev, True) if torch_free_too else 2**30,
    )
    seen = []
    pick_scope = node.pick_scope
    monkeypatch.setattr(node, "pick_scope", lambda scope, free, *a: seen.append(free) or pick_scope(scope, free, *a))
    run("", epochs=1, scope="auto")
    clip_vision_bytes = sum(p.numel() * p.element_size() for p in StandinClipVision().model.parameters())
    assert seen == [2**30 + other_bytes + clip_vision_bytes], "still loaded from encoding the references"
