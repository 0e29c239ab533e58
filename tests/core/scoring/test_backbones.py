"""The real loading code on tiny models; wrong and missing files give the pack's error."""

import json

import pytest
import torch

from devtools.tiny_eval_models import comfy_tokenizer_dir
from p3s_core.errors import P3SInputError
from p3s_core.scoring import backbones
from p3s_core.scoring.backbones import load_clip, load_dino, resolve_backbone_file
from p3s_core.scoring.preprocess import preprocess_images
from p3s_core.scoring.protocol import CLIP_B32, CLIP_PREPROCESS, DINO_PREPROCESS, DINO_S16


def _pixels(spec, seed=0):
    return preprocess_images(torch.rand(3, 240, 260, 3, generator=torch.Generator().manual_seed(seed)), spec)


@pytest.mark.parametrize("layout", ["clip_file", "clip_snapshot"])
def test_clip_loads_from_a_single_file_or_a_snapshot_and_embeds_as_the_original(eval_models, layout):
    clip = load_clip(eval_models[layout], comfy_tokenizer_dir())
    original = eval_models["clip"]
    pixels = _pixels(CLIP_PREPROCESS)
    with torch.no_grad():
        expected = original.visual_projection(original.vision_model(pixel_values=pixels).pooler_output)
        tokens = clip.tokenizer(["a photo of dog", "a dog"], padding=True, return_tensors="pt")
        expected_text = original.text_projection(original.text_model(**tokens).pooler_output)
    assert torch.allclose(clip.embed_images(pixels), expected, atol=1e-5)
    assert torch.allclose(clip.embed_texts(["a photo of dog", "a dog"]), expected_text, atol=1e-5)
    assert not clip.is_protocol and "ViT-B/32" not in clip.label  # a tiny model is not the protocol's


@pytest.mark.parametrize("layout", ["dino_file", "dino_snapshot"])
def test_dino_loads_with_dinos_layer_norm_and_gives_the_cls_token(eval_models, layout):
    dino = load_dino(eval_models[layout])
    assert dino.model.config.layer_norm_eps == 1e-6
    pixels = _pixels(DINO_PREPROCESS, seed=1)
    with torch.no_grad():
        expected = eval_models["dino"](pixel_values=pixels).last_hidden_state[:, 0]
    assert torch.allclose(dino.embed_images(pixels), expected, atol=1e-5)
    assert not dino.is_protocol


def _meta(shapes):
    return {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}


def test_single_files_of_the_protocols_sizes_are_read_as_vit_b32_and_s16():
    clip_state = _meta(
        {
            "vision_model.embeddings.class_embedding": (768,),
            "vision_model.embeddings.patch_embedding.weight": (768, 3, 32, 32),
            "vision_model.embeddings.position_embedding.weight": (50, 768),
            "vision_model.encoder.layers.11.mlp.fc1.weight": (3072, 768),
            "vision_model.encoder.layers.0.mlp.fc1.weight": (3072, 768),
            "text_model.embeddings.token_embedding.weight": (49408, 512),
            "text_model.embeddings.position_embedding.weight": (77, 512),
            "text_model.encoder.layers.0.mlp.fc1.weight": (2048, 512),
            "text_model.encoder.layers.11.mlp.fc1.weight": (2048, 512),
            "visual_projection.weight": (512, 768),
        }
    )
    config = backbones._clip_config_from_state(clip_state, "clip_model")
    vision, text = config["vision_config"], config["text_config"]
    assert (vision["image_size"], vision["patch_size"], vision["num_hidden_layers"], vision["num_attention_heads"]) == (
        224,
        32,
        12,
        12,
    )
    assert (text["num_hidden_layers"], text["num_attention_heads"], config["projection_dim"]) == (12, 8, 512)
    dino_state = _meta(
        {
            "embeddings.cls_token": (1, 1, 384),
            "embeddings.patch_embeddings.projection.weight": (384, 3, 16, 16),
            "embeddings.position_embeddings": (1, 197, 384),
            "encoder.layer.0.intermediate.dense.weight": (1536, 384),
            "encoder.layer.0.attention.attention.query.bias": (384,),
            "encoder.layer.11.output.dense.weight": (384, 1536),
        }
    )
    dino = backbones._dino_config_from_state(dino_state, "dino_model")
    assert (dino["image_size"], dino["patch_size"], dino["num_hidden_layers"], dino["num_attention_heads"]) == (
        224,
        16,
        12,
        6,
    )
    assert dino["qkv_bias"] is True


def test_a_missing_file_names_the_folder_the_expected_files_and_the_download(tmp_path):
    with pytest.raises(P3SInputError) as error:
        resolve_backbone_file([tmp_path], DINO_S16.file_name, DINO_S16, "dino_model")
    message = str(error.value)
    assert "models/p3s_eval" in message and "dino-vits16.safetensors" in message and DINO_S16.url in message
    assert "config.json" in message and str(tmp_path) not in message  # never a server path
    with pytest.raises(P3SInputError, match="outside the models folder"):
        resolve_backbone_file([tmp_path], "../secret.safetensors", CLIP_B32, "clip_model")


def test_a_dino_file_given_as_clip_and_a_clip_file_given_as_dino_are_refused(eval_models):
    with pytest.raises(P3SInputError, match="not a CLIP model"):
        load_clip(eval_models["dino_file"], comfy_tokenizer_dir())
    with pytest.raises(P3SInputError, match="not a DINO ViT"):
        load_dino(eval_models["clip_file"])


def test_a_truncated_file_is_refused(eval_models, tmp_path):
    broken = tmp_path / "dino-vits16.safetensors"
    broken.write_bytes(eval_models["dino_file"].read_bytes()[:5000])
    with pytest.raises(P3SInputError, match="cannot be read as model weights"):
        load_dino(broken)


def test_foreign_or_missing_tensors_are_refused(eval_models, tmp_path):
    from safetensors.torch import load_file, save_file

    state = load_file(str(eval_models["dino_file"]))
    save_file({**state, "classifier.weight": torch.zeros(2, 64)}, str(tmp_path / "extra.safetensors"))
    with pytest.raises(P3SInputError, match="foreign tensors"):
        load_dino(tmp_path / "extra.safetensors")
    del state["layernorm.weight"]
    save_file(state, str(tmp_path / "missing.safetensors"))
    with pytest.raises(P3SInputError, match="lacks"):
        load_dino(tmp_path / "missing.safetensors")


def test_a_snapshot_of_another_model_is_refused(eval_models, tmp_path):
    folder = tmp_path / "dino-vits16"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(eval_models["dino_file"].read_bytes())
    (folder / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(P3SInputError, match="describes a 'clip' model"):
        load_dino(folder / "model.safetensors")


def test_clip_without_a_tokenizer_is_refused(eval_models):
    with pytest.raises(P3SInputError, match=r"vocab\.json and merges\.txt"):
        load_clip(eval_models["clip_file"], None)
