"""The encoder's hint_region: subject (new models) shows only the subject in the hint; image the whole latent."""

from __future__ import annotations

import pytest
import torch

from ..p3s_support import import_pack_module

subject_encoder = import_pack_module("p3s_core.model.subject_encoder")
errors = import_pack_module("p3s_core.errors")

CONFIG = {"token_dim": 16, "inner_dim": 16, "heads": 2}


def inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randn(2, 17, 16, generator=gen)
    grid = (torch.rand(2, 4, 4, generator=gen) > 0.5).float()
    latent = torch.randn(2, 4, 8, 8, generator=gen)
    mask = torch.zeros(2, 8, 8)
    mask[:, 2:6, 1:5] = 1.0
    return tokens, grid, latent, mask


def test_a_subject_hint_is_zero_outside_the_subject_at_initialisation():
    encoder = subject_encoder.SubjectEncoder.from_config({**CONFIG, "hint_region": "subject"})
    tokens, grid, latent, mask = inputs()
    hint = encoder(tokens, grid, latent, mask)
    assert torch.equal(hint, latent * mask.unsqueeze(1))
    image = subject_encoder.SubjectEncoder.from_config({**CONFIG, "hint_region": "image"})
    assert torch.equal(image(tokens, grid, latent, mask), latent)


def test_configs_without_a_region_are_image_and_new_models_default_to_subject():
    assert subject_encoder.SubjectEncoder.from_config(CONFIG).config["hint_region"] == "image"
    default = subject_encoder.SubjectEncoder.from_config(dict(subject_encoder.DEFAULT_ENCODER_CONFIG))
    assert default.config["hint_region"] == "subject"


def test_a_subject_hint_without_its_latent_mask_is_refused():
    encoder = subject_encoder.SubjectEncoder.from_config({**CONFIG, "hint_region": "subject"})
    tokens, grid, latent, _ = inputs()
    with pytest.raises(errors.P3SInputError, match="subject mask at the latent's size"):
        encoder(tokens, grid, latent)
    with pytest.raises(errors.P3SInputError, match="hint_region"):
        subject_encoder.SubjectEncoder.from_config({**CONFIG, "hint_region": "everything"})


def test_the_mask_is_area_averaged_to_the_latent():
    mask = torch.zeros(1, 16, 24)
    mask[:, :8, :12] = 1.0
    small = subject_encoder.mask_to_latent(mask, (2, 3))
    assert small.shape == (1, 2, 3)
    assert torch.allclose(small, torch.tensor([[[1.0, 0.5, 0.0], [0.0, 0.0, 0.0]]]))
