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

    def encode_from_tokens_scheduled(self, tokens: dict) -> list:
        """CONDITIONING as CLIP Text Encode gives it (SD1.5: no pooled output is read)."""
        return [[self.encode_from_tokens(tokens), {}]]


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


def run(
    save_name: str,
    epochs: int = 2,
    seed: int = 3,
    attention_word: str = "",
    scope="injection",
    overwrite=False,
    lr=1e-3,
    **extra,
):
    images, mask = references()
    with torch.inference_mode():  # as ComfyUI executes every node
        model = tiny_sd15_patcher(seed=0)
        return node.P3SFineTune.execute(
            model, StandinClip(), StandinVae(), StandinClipVision(), images, mask,
            "a photo of sks disc", epochs, lr, 0.1, 0.1, 64, 1, seed, "auto", scope, False, save_name, overwrite,
            attention_word=attention_word, **extra,
        )  # fmt: skip


def test_node_trains_in_inference_mode_and_saves_a_loadable_model(p3s_folder):
    first = run("sub/disc.safetensors", epochs=2)
    p3s, plot, overlays = first.result
    saved, learned = first.ui["text"]
    assert saved == "saved sub/disc.safetensors"
    assert learned.startswith("subject loss "), "the learning check's line under the node"
    # Without a word: the first training image three times (framed square: frame_subject is on by default).
    assert overlays.shape == (3, 64, 64, 3)
    assert torch.equal(overlays[0], overlays[2])
    assert plot.shape == (1, 320, 512, 3)
    assert not p3s.injection_is_zero(), "the zero layers learned"
    model_file = pack_core(node).model.model_file
    tensors, info = model_file.load_p3s_model(p3s_folder / "sub" / "disc.safetensors")
    assert (info.training["epochs"], info.training["images"], info.training["scope"]) == (2, 1, "injection")
    assert info.training["prompts"] == ["a photo of sks disc"]
    assert info.config["encoder"]["token_dim"] == TOKEN_WIDTH
    key = "injection.output_11.attn2.weight"
    assert torch.equal(tensors[key], p3s.state_dict()[key].half()), "the returned model is the saved one"
    # The name taken: numbered like SaveImage, the first file kept; overwrite replaces it.
    assert run("sub/disc.safetensors", epochs=1).ui["text"][0] == "saved sub/disc_00002.safetensors"
    assert model_file.load_p3s_model(p3s_folder / "sub" / "disc_00002.safetensors")[1].training["epochs"] == 1
    assert model_file.load_p3s_model(p3s_folder / "sub" / "disc.safetensors")[1].training["epochs"] == 2
    assert run("sub/disc.safetensors", epochs=1, overwrite=True).ui["text"][0] == "saved sub/disc.safetensors"
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
    _, _, overlays = run("", epochs=2, attention_word="sks", frame_subject=False).result  # the image as given
    assert overlays.shape == (3, 40, 64, 3)
    plain, _ = references()
    reference = torch.nn.functional.interpolate(plain.movedim(-1, 1), size=(40, 64), mode="bilinear").movedim(1, -1)
    for overlay in overlays:
        assert (overlay[20:, :, :3] - reference[0, 20:]).abs().mean() > 0.02, "a heat map is drawn over the image"
    errors = pack_core(node).errors
    with pytest.raises(errors.P3SInputError, match="not found in the prompt"):
        run("sub/never.safetensors", epochs=1, attention_word="cat")
    assert not (p3s_folder / "sub" / "never.safetensors").exists(), "a missing word fails before training"


def loaded(path):
    model_file = pack_core(node).model.model_file
    tensors, info = model_file.load_p3s_model(path)
    return model_file.P3SModelFile(tensors, info, name=path.name)


@pytest.fixture
def one_thread():
    """Bit-exact comparisons on one CPU thread: several threads may sum a gradient in another order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_checkpoints_resume_exactly_and_the_final_name_is_unchanged(p3s_folder, one_thread):
    whole = run("dog.safetensors", epochs=3, scope="lora", lora_rank=4, save_every=1).result[0]
    assert sorted(p.name for p in p3s_folder.iterdir()) == [
        "dog.safetensors", "dog_e0001.safetensors", "dog_e0002.safetensors",
    ], "numbered checkpoints, the final file under its own name, no temporary files"  # fmt: skip
    checkpoint = loaded(p3s_folder / "dog_e0001.safetensors")
    assert checkpoint.info.resume == {"epoch": 1} and checkpoint.info.dtype == "fp32"
    assert any(k.startswith("optimizer.") for k in checkpoint.tensors)
    final = loaded(p3s_folder / "dog.safetensors")
    assert final.info.resume is None and not any(k.startswith("optimizer.") for k in final.tensors)
    assert (final.info.scope, final.info.training["scope_requested"]) == ("lora", "lora")

    resumed = run("dog_resumed.safetensors", epochs=3, scope="auto", continue_from=checkpoint).result[0]
    assert resumed.scope == "lora", "auto keeps the input model's scope"
    for key, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    assert loaded(p3s_folder / "dog_resumed.safetensors").info.training["resumed_from_epoch"] == 1
    errors = pack_core(node).errors
    with pytest.raises(errors.P3SInputError, match="already been trained for 3 epochs"):
        run("", epochs=3, continue_from=whole)
    extended = run("", epochs=4, scope="auto", continue_from=whole).result[0]
    assert any(not torch.equal(extended.state_dict()[k], v) for k, v in whole.state_dict().items())


def test_cancel_keeps_the_checkpoints_asked_for_and_nothing_else(p3s_folder, monkeypatch):
    import comfy.model_management
    import comfy.utils

    def cancel_in_epoch_three(value, total, preview, **_):
        if value == 3:
            comfy.model_management.interrupt_current_processing(True)

    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", cancel_in_epoch_three)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            run("cat.safetensors", epochs=5, save_every=2)
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert [p.name for p in p3s_folder.iterdir()] == ["cat_e0002.safetensors"]


def test_auto_picks_the_richest_scope_that_fits_the_free_memory(p3s_folder, monkeypatch):
    import comfy.model_management

    core = pack_core(node)
    model = tiny_sd15_patcher(seed=0)
    data = core.training.settings.TrainingData(
        torch.zeros(1, 4, 8, 8),
        torch.zeros(1, 17, 16),
        torch.zeros(1, 4, 4),
        torch.zeros(1, 7, 32),
        torch.zeros(1, 7, 32),
    )  # fmt: skip  (the latent of the 64 px references that run() trains on, framed square by default)
    settings = core.training.settings.TrainSettings()
    encoder = {**core.model.subject_encoder.DEFAULT_ENCODER_CONFIG, "token_dim": TOKEN_WIDTH}
    run_steps = core.training.finetune_run
    needs = run_steps.scope_needs(model, data, settings, encoder, 4)
    assert needs["full"] > needs["attention"] > needs["lora"] > needs["injection"] > 0
    asked = []
    real = comfy.model_management.get_free_memory

    def mock_free(free: int) -> None:
        def get_free_memory(dev=None, torch_free_too=False):
            if torch_free_too:  # ComfyUI's attention asks too: leave it the real figures
                return real(dev, torch_free_too)
            asked.append(dev)
            return free

        monkeypatch.setattr(comfy.model_management, "get_free_memory", get_free_memory)

    def picks(free: int) -> tuple[str, str]:
        return run_steps.pick_scope("auto", free, model, data, settings, encoder, 4)

    assert picks(needs["full"])[0] == "full"
    assert picks(needs["full"] - 1)[0] == "attention"
    assert picks((needs["lora"] + needs["attention"]) // 2)[0] == "lora"
    assert picks(needs["lora"] - 1)[0] == "injection"
    chosen, line = picks(0)
    assert chosen == "injection" and "does not fit either" in line
    assert run_steps.pick_scope("lora", None, model, data, settings, encoder, 4)[0] == "lora"

    shown = []
    monkeypatch.setattr(node, "_show_loss", shown.append)
    mock_free((needs["lora"] + needs["attention"]) // 2)
    p3s = run("auto.safetensors", epochs=1, scope="auto", lora_rank=4).result[0]
    assert p3s.scope == "lora"
    assert asked and all(dev == model.load_device for dev in asked), "free memory of the model's device"
    assert shown[0].startswith("P3S Fine-tune: scope auto -> lora (free ")
    info = loaded(p3s_folder / "auto.safetensors").info
    assert (info.scope, info.training["scope"], info.training["scope_requested"]) == ("lora", "lora", "auto")


def test_new_models_hint_the_subject_only_and_train_the_hint_path_faster(p3s_folder):
    p3s = run("hinted.safetensors", epochs=1).result[0]
    info = pack_core(node).model.model_file.load_p3s_model(p3s_folder / "hinted.safetensors")[1]
    assert p3s.encoder.config["hint_region"] == info.config["encoder"]["hint_region"] == "subject"
    assert (info.training["hint_source"], info.training["hint_lr_scale"]) == ("own", 100.0)
    patching = import_pack_module("nodes.p3s_patching")
    images, mask = references()
    with torch.inference_mode():
        model = tiny_sd15_patcher(seed=0)
        untrained = patching.new_p3s_model(model, {**p3s.encoder.config})
        hint = patching.encode_hint(untrained, images, mask, StandinVae(), StandinClipVision(), model)
        _, _, latent, latent_mask = patching.reference_features(images, mask, StandinVae(), StandinClipVision(), model)
    assert latent_mask.shape == (1, *latent.shape[-2:]) and 0 < float(latent_mask.mean()) < 1
    assert torch.allclose(hint, latent * latent_mask.unsqueeze(1)), "untrained: the subject's latent, zero elsewhere"


def test_lr_auto_trains_each_scope_at_its_rate_says_so_and_keeps_it_in_the_file(p3s_folder, monkeypatch):
    rates = import_pack_module("p3s_core.training.learning_rates").SCOPE_LEARNING_RATES
    shown = []
    monkeypatch.setattr(node, "_show_loss", shown.append)
    for scope in ("injection", "full"):
        run(f"{scope}.safetensors", epochs=1, scope=scope, lr=0.0)
        training = loaded(p3s_folder / f"{scope}.safetensors").info.training
        assert (training["lr"], training["lr_requested"]) == (rates[scope], "auto")
        assert training["lr_reason"].startswith(f"lr auto -> {rates[scope]:g} for scope {scope}")
        assert training["lr_reason"] in shown[0], "the progress text says which rate and why"
        shown.clear()
    run("given.safetensors", epochs=1, scope="injection", lr=2e-4)
    training = loaded(p3s_folder / "given.safetensors").info.training
    assert (training["lr"], training["lr_requested"], training["lr_reason"]) == (2e-4, 2e-4, "lr 0.0002 (given)")


def test_a_run_that_did_not_learn_says_so_with_what_to_try(p3s_folder, monkeypatch):
    shown = []
    monkeypatch.setattr(node, "_show_loss", shown.append)
    out = run("still.safetensors", epochs=1, lr=1e-12)
    saved, learned = out.ui["text"]
    assert saved == "saved still.safetensors", "the run is saved all the same"
    assert "the model barely moved" in learned and "a higher lr (ran 1e-12)" in learned
    assert learned in shown[-1]
    assert out.result[1].shape == (1, 320, 512, 3)


def test_prior_preservation_generates_class_images_from_the_class_prompt_and_trains_on_them(p3s_folder, monkeypatch):
    import comfy.sample

    sampled = []
    real_sample = comfy.sample.sample

    def recording_sample(model, noise, steps, cfg, *args, **kwargs):
        sampled.append((noise.shape, steps, cfg))
        return real_sample(model, noise, steps, cfg, *args, **kwargs)

    monkeypatch.setattr(comfy.sample, "sample", recording_sample)
    shown = []
    monkeypatch.setattr(node, "_show_loss", shown.append)
    plain = run("plain.safetensors", attention_word="sks").result[0]
    assert sampled == [], "off by default: nothing is generated"
    prior = run("prior.safetensors", attention_word="sks", prior_loss_weight=1.0, class_image_count=2).result[0]
    assert sampled == [((2, 4, 8, 8), 20, 7.5)], "two class images at the (framed) references' latent size"
    assert any("generating 2 class images of 'a photo of disc'" in line for line in shown)
    training = loaded(p3s_folder / "prior.safetensors").info.training
    assert (training["class_prompt"], training["class_images"]) == ("a photo of disc", "2 generated")
    assert training["prior_loss_weight"] == 1.0
    assert any(not torch.equal(prior.state_dict()[k], v) for k, v in plain.state_dict().items())


def test_prior_preservation_encodes_given_class_images_and_needs_an_identifier_or_a_class_prompt(p3s_folder):
    given = torch.rand(3, 40, 40, 3, generator=torch.Generator().manual_seed(1))
    run("given.safetensors", attention_word="sks", prior_loss_weight=0.5, class_images=given, class_prompt="a disc")
    training = loaded(p3s_folder / "given.safetensors").info.training
    assert (training["class_prompt"], training["class_images"]) == ("a disc", "3 given")
    errors = pack_core(node).errors
    with pytest.raises(errors.P3SInputError, match="needs a class prompt"):
        run("none.safetensors", attention_word="", prior_loss_weight=1.0)
    with pytest.raises(errors.P3SInputError, match="prior_loss_weight is"):
        run("none.safetensors", prior_loss_weight=-1.0)
    assert not (p3s_folder / "none.safetensors").exists(), "refused before training: nothing written"
