"""``precision`` auto asks ComfyUI whether fp16 works on the card: on those where ComfyUI judges it
broken or slower than fp32 (GTX 16xx, Pascal on Linux, Maxwell) an fp32 base trains in fp32, not
under fp16 autocast. The CUDA card is emulated: its name and compute capability are patched."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from devtools.pack_modules import import_pack_module, pack_core

placement = import_pack_module("nodes.p3s_placement")
node = import_pack_module("nodes.finetune_node")
precision = pack_core(node).training.precision

CARDS = {  # name, (major, minor), what auto trains an fp32 base in
    "NVIDIA GeForce GTX 1660 SUPER": ((7, 5), "fp32"),  # fp16 broken
    "NVIDIA GeForce GTX 1080": ((6, 1), "fp32"),  # Pascal on Linux: fp32 is faster
    "NVIDIA GeForce GTX 980": ((5, 2), "fp32"),  # Maxwell
    "Tesla T4": ((7, 5), "fp16"),
    "NVIDIA GeForce RTX 2080 Ti": ((7, 5), "fp16"),
}


@pytest.fixture
def cuda_card(monkeypatch):
    """ComfyUI on a CUDA card of the given name (no native bf16: none of these cards has it)."""
    import comfy.model_management as mm

    monkeypatch.setattr(mm, "cpu_mode", lambda: False)
    monkeypatch.setattr(mm, "is_device_cpu", lambda device: False)
    monkeypatch.setattr(mm, "WINDOWS", False)
    monkeypatch.setattr(torch.version, "hip", None)

    def use(name: str, capability: tuple[int, int]) -> None:
        props = SimpleNamespace(name=name, major=capability[0], minor=capability[1], total_memory=8 * 2**30)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)

    return use


@pytest.mark.parametrize("name", list(CARDS))
def test_auto_trains_an_fp32_base_in_what_comfyui_judges_works(cuda_card, name):
    capability, expected = CARDS[name]
    cuda_card(name, capability)
    cuda = torch.device("cuda")
    used = precision.precision_used(
        "auto", cuda, torch.float32, bf16_supported=lambda d: False, fp16_supported=placement.host_fp16_works
    )
    assert used == expected
    path = precision.training_precision(
        "auto", cuda, torch.float32, bf16_supported=lambda d: False, fp16_supported=placement.host_fp16_works
    )
    assert (path.autocast, path.scaled) == ((None, False) if expected == "fp32" else (torch.float16, True))
    forced = precision.precision_used("fp16", cuda, torch.float32, lambda d: False, placement.host_fp16_works)
    assert forced == "fp16", "asked by name, fp16 stays"


def test_fine_tune_asks_comfyui_and_records_what_it_trained_in(monkeypatch, tmp_path):
    import folder_paths

    from .test_finetune_node import run

    monkeypatch.setitem(folder_paths.folder_names_and_paths, node.P3S_FOLDER, ([str(tmp_path)], {".safetensors"}))
    asked = []
    real = precision.precision_used

    def spy(asked_precision, device, base_dtype, *args, **kwargs):
        asked.append(kwargs.get("fp16_supported"))
        return real(asked_precision, device, base_dtype, *args, **kwargs)

    monkeypatch.setattr(node, "precision_used", spy)
    run("asked.safetensors", epochs=1)
    assert asked == [placement.host_fp16_works]
    info = pack_core(node).model.model_file.load_p3s_model(tmp_path / "asked.safetensors")[1]
    assert (info.training["precision"], info.training["precision_used"]) == ("auto", "fp32"), "fp32 on the CPU"
