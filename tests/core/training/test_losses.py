"""L_LDM and L_ac against their formulas on hand-built maps."""

from __future__ import annotations

import pytest
import torch

from p3s_core.errors import P3SInputError
from p3s_core.training import losses
from p3s_core.training.losses import attention_consistency_loss, ldm_loss


def _maps() -> tuple[torch.Tensor, torch.Tensor]:
    # Two rows of 4 tokens each (softmax-like: rows sum to 1).
    m_c = torch.tensor([[[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]]])
    m_o = torch.tensor([[[0.4, 0.2, 0.2, 0.2], [0.25, 0.25, 0.5, 0.0]]])
    return m_c, m_o


def test_lac_mean_normalisation_matches_formula():
    m_c, m_o = _maps()
    squared = [0.3**2, 0.1**2, 0.1**2, 0.1**2, 0, 0, 0.25**2, 0.25**2]
    mse = sum(squared) / 8
    avg = (m_c.sum().item() / 8 + m_o.sum().item() / 8) / 2  # = 0.25 = 1 / tokens
    assert avg == pytest.approx(0.25)
    loss = attention_consistency_loss(m_c, m_o)
    assert loss.item() == pytest.approx(mse / avg, rel=1e-6)


def test_lac_sum_normalisation_is_the_literal_formula():
    m_c, m_o = _maps()
    mse = (0.09 + 0.03 + 0.125) / 8
    loss = attention_consistency_loss(m_c, m_o, normalisation="sum")
    # Sum of each map = number of softmax rows = 2, so avg = 2.
    assert loss.item() == pytest.approx(mse / 2.0, rel=1e-6)
    # The literal normalisation shrinks with the map size; the mean one does not.
    big_c, big_o = m_c.repeat(1, 50, 1), m_o.repeat(1, 50, 1)
    assert attention_consistency_loss(big_c, big_o, "sum").item() == pytest.approx(loss.item() / 50, rel=1e-5)
    assert attention_consistency_loss(big_c, big_o).item() == pytest.approx(
        attention_consistency_loss(m_c, m_o).item(), rel=1e-5
    )


def test_lac_is_zero_for_equal_maps_and_gives_gradients():
    m_c, _ = _maps()
    assert attention_consistency_loss(m_c, m_c.clone()).item() == 0.0
    logits = torch.randn(2, 3, 5, requires_grad=True)
    loss = attention_consistency_loss(logits.softmax(-1), torch.full((2, 3, 5), 0.2))
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_loss_inputs_are_checked():
    m_c, m_o = _maps()
    with pytest.raises(P3SInputError, match="normalisation"):
        attention_consistency_loss(m_c, m_o, normalisation="max")
    with pytest.raises(P3SInputError, match="same layer"):
        attention_consistency_loss(m_c, m_o[:, :1])
    with pytest.raises(P3SInputError, match="does not match"):
        ldm_loss(torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 3))


def test_ldm_loss_is_mse():
    pred = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1, 1)
    noise = torch.tensor([1.0, 0.0, 3.0, 2.0]).view(1, 4, 1, 1)
    assert ldm_loss(pred, noise).item() == pytest.approx((4 + 4) / 4)


def test_the_subject_weighted_loss_is_the_plain_loss_at_weight_one_and_ignores_the_background_at_zero():
    gen = torch.Generator().manual_seed(0)
    pred, noise = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 4, 8, 8, generator=gen)
    masks = torch.zeros(2, 8, 8)
    masks[:, 2:5, 3:6] = 1.0
    plain = losses.ldm_loss(pred, noise)
    assert torch.allclose(losses.ldm_loss(pred, noise, losses.subject_weight(masks, 1.0)), plain)
    subject_only = losses.ldm_loss(pred, noise, losses.subject_weight(masks, 0.0))
    inside = ((pred - noise) ** 2)[:, :, 2:5, 3:6].mean()
    assert torch.allclose(subject_only, inside)
    changed = noise.clone()
    changed[:, :, 0, 0] += 10.0  # an error outside the subject only
    assert torch.allclose(losses.ldm_loss(pred, changed, losses.subject_weight(masks, 0.0)), subject_only)
    assert losses.ldm_loss(pred, changed, losses.subject_weight(masks, 0.5)) > losses.ldm_loss(
        pred, noise, losses.subject_weight(masks, 0.5)
    )
