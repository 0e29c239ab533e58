"""P3S Fine-tune executed in-process as ComfyUI runs nodes (inference mode) on the tiny model,
with small stand-ins for CLIP, VAE and CLIP vision: it saves a loadable model, and Cancel stops
it within a step, writes nothing and lets the trained copy be freed."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from devtools.pack_modules import import_pack_module, pack_core
from devtools.tiny_models import tiny_sd15_patcher

node = import_pack_module("nodes.finetune_node")
TOKEN_WIDTH = 16


class StandinClip:
    """ComfyUI's real SD1.5 tokenizer; conditioning ``[1, 77, 32]`` (the tiny model's width) from the tokens."""

    def __init__(self):
        import comfy.sd1_clip

        self.tokenizer = comfy.sd1_clip.SD1Tokenizer()

    def tokenize(self, text: str) -> dict:
        return self.tokenizer.tokenize_with_weights(text)

    def encode_from_tokens(self, tokens: dict) -> torch.Tensor:
        ids = [token[0] for chunk in tokens["l"] for token in chunk]
        gen = torch.Generator().manual_seed(sum(i * (n + 1) for n, i in enumerate(ids)) % 2**31)
        return torch.randn(1, len(ids), 32, generator=gen)


class StandinVae:
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        pixels = images.movedim(-1, 1)[:, :3]
        latent = torch.nn.functional.avg_pool2d(pixels, 8)
        return torch.cat([latent, latent.mean(1, keepdim=True)], dim=1)


class StandinClipVision:
    """The parts of ComfyUI's ``ClipVisionModel`` the node reads; 16x16 patches of 14 px."""

    image_size = 224
    image_mean = (0.5, 0.5, 0.5)
    image_std = (0.25, 0.25, 0.25)

    def __init__(self):
        import comfy.model_patcher

        embeddings = torch.nn.Module()
        embeddings.patch_embedding = torch.nn.Conv2d(3, TOKEN_WIDTH, 14, stride=14, bias=False)
        torch.nn.init.normal_(embeddings.patch_embedding.weight, generator=torch.Generator().manual_seed(0))
        self.model = torch.nn.Module()
        self.model.vision_model = torch.nn.Module()
        self.model.vision_model.embeddings = embeddings
        self.model.forward = self.forward
        self.load_device = torch.device("cpu")
        self.patcher = comfy.model_patcher.ModelPatcher(self.model, self.load_device, self.load_device)

    def forward(self, pixel_values: torch.Tensor, intermediate_output: int):
        patches = self.model.vision_model.embeddings.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
        tokens = torch.cat([patches.mean(1, keepdim=True), patches], dim=1)
        return None, tokens


@pytest.fixture
def p3s_folder(tmp_path, monkeypatch):
    import folder_paths

    monkeypatch.setitem(folder_paths.folder_names_and_paths, node.P3S_FOLDER, ([str(tmp_path)], {".safetensors"}))
    return tmp_path


def references() -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.full((1, 64, 96, 3), 0.5)
    images[:, 16:48, 16:48] = torch.tensor([0.9, 0.2, 0.1])
    mask = torch.zeros(1, 64, 96)
    mask[:, 16:48, 16:48] = 1.0
    return images, mask


def run(save_name: str, epochs: int = 2, seed: int = 3, attention_word: str = "", overwrite: bool = False):
    images, mask = references()
    with torch.inference_mode():  # as ComfyUI executes every node
        model = tiny_sd15_patcher(seed=0)
        return node.P3SFineTune.execute(
            model, StandinClip(), StandinVae(), StandinClipVision(), images, mask,
            "a photo of sks disc", epochs, 1e-3, 0.1, 0.1, 64, 1, seed, "auto", "injection", False, save_name,
            overwrite, attention_word=attention_word,
        )  # fmt: skip


def test_node_trains_in_inference_mode_and_saves_a_loadable_model(p3s_folder):
    first = run("sub/disc.safetensors", epochs=2)
    p3s, plot, overlays = first.result
    assert first.ui == {"text": ["saved sub/disc.safetensors"]}
    assert overlays.shape == (3, 40, 64, 3), "without a word: the first reference image three times"
    assert torch.equal(overlays[0], overlays[2])
    assert plot.shape == (1, 320, 512, 3)
    assert not p3s.injection_is_zero(), "the zero layers learned"
    model_file = pack_core(node).model_file
    tensors, info = model_file.load_p3s_model(p3s_folder / "sub" / "disc.safetensors")
    assert (info.training["epochs"], info.training["images"], info.training["scope"]) == (2, 1, "injection")
    assert info.training["prompts"] == ["a photo of sks disc"]
    assert info.config["encoder"]["token_dim"] == TOKEN_WIDTH
    key = "injection.output_11.attn2.weight"
    assert torch.equal(tensors[key], p3s.state_dict()[key].half()), "the returned model is the saved one"
    # The name taken: numbered like SaveImage, the first file kept; overwrite replaces it.
    assert run("sub/disc.safetensors", epochs=1).ui == {"text": ["saved sub/disc_00002.safetensors"]}
    assert model_file.load_p3s_model(p3s_folder / "sub" / "disc_00002.safetensors")[1].training["epochs"] == 1
    assert model_file.load_p3s_model(p3s_folder / "sub" / "disc.safetensors")[1].training["epochs"] == 2
    assert run("sub/disc.safetensors", epochs=1, overwrite=True).ui == {"text": ["saved sub/disc.safetensors"]}
    assert model_file.load_p3s_model(p3s_folder / "sub" / "disc.safetensors")[1].training["epochs"] == 1
    assert sorted(f.name for f in (p3s_folder / "sub").iterdir()) == ["disc.safetensors", "disc_00002.safetensors"]
    # Outside a server the node leaves ComfyUI's modules alone (its own ``utils`` package still imports).
    from utils.extra_config import load_extra_path_config

    assert callable(load_extra_path_config)


def test_cancel_stops_within_one_step_writes_nothing_and_frees_the_model(p3s_folder, monkeypatch):
    import comfy.model_management
    import comfy.utils

    made, steps = [], []
    new_p3s_model = node.new_p3s_model
    monkeypatch.setattr(node, "new_p3s_model", lambda *a: made.append(weakref.ref(m := new_p3s_model(*a))) or m)

    def cancel_at_first_step(value, total, preview, **_):
        steps.append((value, total))
        comfy.model_management.interrupt_current_processing(True)  # Cancel pressed during training

    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", cancel_at_first_step)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            run("cancelled.safetensors", epochs=50)
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert steps == [(1, 50)], "stopped after the first step, not at the end"
    assert list(p3s_folder.iterdir()) == [], "no model file and no temporary file"
    gc.collect()
    assert len(made) == 1 and made[0]() is None, "nothing keeps the trained copy alive"


def test_attention_overlays_of_a_word_on_the_first_reference(p3s_folder):
    _, _, overlays = run("", epochs=2, attention_word="sks").result
    assert overlays.shape == (3, 40, 64, 3)
    plain, _ = references()
    reference = torch.nn.functional.interpolate(plain.movedim(-1, 1), size=(40, 64), mode="bilinear").movedim(1, -1)
    for overlay in overlays:
        assert (overlay[20:, :, :3] - reference[0, 20:]).abs().mean() > 0.02, "a heat map is drawn over the image"
    errors = pack_core(node).errors
    with pytest.raises(errors.P3SInputError, match="not found in the prompt"):
        run("sub/never.safetensors", epochs=1, attention_word="cat")
    assert not (p3s_folder / "sub" / "never.safetensors").exists(), "a missing word fails before training"
