"""Attention-map capture on a tiny SD1.5-shaped model: shapes, rows summing to 1, the output
left unchanged (plain and P3S), the copy's maps, L_ac per step, bounded memory, one run at a time."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ..p3s_support import import_pack_module, randomise_injection, sample

patching = import_pack_module("nodes.p3s_patching")
capture = import_pack_module("nodes.attention_patching")
maps_mod = import_pack_module("p3s_core.inspection.attention_maps")
losses = import_pack_module("p3s_core.training.losses")

TOKENS = 7  # p3s_support.conditioning: 7 context columns


class RawRecorder(maps_mod.AttentionRecorder):
    """Also keeps every call's raw cond-row probabilities, in call order, to check the aggregates."""

    def reset(self):
        super().reset()
        self.raw = []

    def record(self, role, probs, options, samples=None):
        super().record(role, probs, options, samples)  # may reset (new run) first
        self.raw.append((role, self._step_of(options), probs.clone()))

    def _step_of(self, options):
        injection = import_pack_module("p3s_core.sampling.injection")
        return injection.step_index(float(options["sigmas"].max()), options["sample_sigmas"])[0]


def recorder(cls=maps_mod.AttentionRecorder, **settings):
    return cls(maps_mod.CaptureSettings(**settings))


def test_attention_probs_are_the_softmax_the_layer_uses():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, n, 16, generator=gen) for n in (12, 5, 5))
    probs = maps_mod.attention_probs(q, k, heads=4)
    assert probs.shape == (2, 4, 12, 5)

    def split(t):
        return t.reshape(2, -1, 4, 4).transpose(1, 2)

    expected = F.scaled_dot_product_attention(split(q), split(k), split(v))
    assert torch.allclose(probs @ split(v), expected, atol=1e-6)


def test_frozen_maps_have_the_latent_shape_and_rows_sum_to_one(base, plain_output):
    rec = recorder()
    out = sample(capture.attach_attention_capture(base, rec), steps=4)
    assert torch.equal(out, plain_output), "capturing must not change the sampled image"
    assert rec.num_steps == 4 and rec.calls("frozen") == 4 and rec.calls("copy") == 0
    for steps in (None, [1], [2, 4]):
        maps = rec.maps("frozen", steps)
        assert maps.shape == (1, TOKENS, 8, 8)  # output_11 runs at the 8x8 latent's resolution
        assert torch.allclose(maps.sum(dim=1), torch.ones(1, 8, 8), atol=1e-5)
    assert not torch.allclose(rec.maps("frozen", [1]), rec.maps("frozen", [4]))
    assert rec.maps("copy") is None and rec.loss_curve() == [None] * 4


def test_cond_rows_only_one_map_per_sample(base):
    rec = recorder(cls=RawRecorder)
    sample(capture.attach_attention_capture(base, rec), batch=2, steps=2)
    # CFG batches cond + uncond rows (4 per call); only the 2 cond rows are recorded.
    assert {probs.shape[0] for _, _, probs in rec.raw} == {2}
    assert rec.maps("frozen").shape[0] == 2
    first = torch.stack([p[0].mean(0) for _, _, p in rec.raw]).mean(0)  # [N, T] of sample 0
    assert torch.allclose(rec.maps("frozen")[0], first.T.reshape(TOKENS, 8, 8), atol=1e-6)


def test_token_groups_sum_their_columns(base):
    groups = (maps_mod.TokenGroup("one", (2,)), maps_mod.TokenGroup("pair", (3, 5)))
    every, chosen = recorder(), recorder(groups=groups)
    sample(capture.attach_attention_capture(capture.attach_attention_capture(base, every), chosen), steps=2)
    full = every.maps("frozen")
    picked = chosen.maps("frozen")
    assert chosen.labels == ["one", "pair"] and picked.shape == (1, 2, 8, 8)
    assert torch.allclose(picked[:, 0], full[:, 2], atol=1e-6)
    assert torch.allclose(picked[:, 1], full[:, 3] + full[:, 5], atol=1e-6)


def test_p3s_copy_maps_and_lac_curve_match_the_loss_function(base, p3s, hint):
    randomise_injection(p3s)
    with torch.no_grad():
        p3s.hint_conv.weight.normal_()  # the copy sees a different input: its maps differ
    applied = patching.apply_p3s(base, p3s, hint)
    without = sample(applied, steps=3)
    rec = recorder(cls=RawRecorder)
    out = sample(capture.attach_attention_capture(applied, rec), steps=3)
    assert torch.equal(out, without), "capturing must not change a P3S model's output"
    assert rec.calls("copy") == rec.calls("frozen") == 3
    copy_maps, frozen_maps = rec.maps("copy"), rec.maps("frozen")
    assert copy_maps.shape == frozen_maps.shape == (1, TOKENS, 8, 8)
    assert torch.allclose(copy_maps.sum(dim=1), torch.ones(1, 8, 8), atol=1e-5)
    curve = rec.loss_curve()
    for step in range(3):
        (copy_probs,) = [p for role, s, p in rec.raw if role == "copy" and s == step]
        (frozen_probs,) = [p for role, s, p in rec.raw if role == "frozen" and s == step]
        expected = losses.attention_consistency_loss(copy_probs, frozen_probs, "mean")
        assert curve[step] == pytest.approx(float(expected), rel=1e-6)
        assert curve[step] > 0
    literal = recorder(normalisation="sum")
    sample(capture.attach_attention_capture(applied, literal), steps=3)
    assert all(0 < s < m for s, m in zip(literal.loss_curve(), curve, strict=True))


def test_untrained_copy_attends_like_the_frozen_model(base, p3s, hint):
    rec = recorder()
    sample(capture.attach_attention_capture(patching.apply_p3s(base, p3s, hint), rec), steps=2)
    assert torch.allclose(rec.maps("copy"), rec.maps("frozen"), atol=1e-6)
    assert rec.loss_curve() == pytest.approx([0.0, 0.0], abs=1e-9)


def test_steps_where_the_copy_skips_have_no_lac(base, p3s, hint):
    randomise_injection(p3s)
    rec = recorder()
    applied = patching.apply_p3s(base, p3s, hint, start_percent=0.0, end_percent=0.5)
    sample(capture.attach_attention_capture(applied, rec), steps=6)
    curve = rec.loss_curve()
    assert curve[0] is not None and curve[-1] is None
    assert rec.calls("copy") == sum(v is not None for v in curve) < rec.calls("frozen") == 6


def test_memory_is_bounded_and_each_run_starts_afresh(base):
    budget = 2 * TOKENS * 4 * 4 * 4 * 3  # three step bins of 4x4 maps for both roles
    rec = recorder(max_side=4, budget_bytes=budget)
    model = capture.attach_attention_capture(base, rec)
    sample(model, steps=12, size=16)
    assert rec.maps("frozen").shape == (1, TOKENS, 4, 4)  # 16x16 latent pooled to max_side
    assert rec.bins == 3 and rec.stored_bytes() <= budget
    assert torch.allclose(rec.maps("frozen").sum(dim=1), torch.ones(1, 4, 4), atol=1e-5)
    sample(model, steps=12, size=16)
    assert rec.calls("frozen") == 12, "a new sampling run clears the previous one"


def test_an_existing_replace_patch_on_the_layer_is_kept(base, plain_output):
    seen = []

    def other(q, k, v, extra):
        seen.append(q.shape)
        return torch.zeros_like(q)

    patched = base.clone()
    patched.set_model_attn2_replace(other, "output", 11)
    reference = sample(patched)
    rec = recorder()
    assert torch.equal(sample(capture.attach_attention_capture(patched, rec)), reference)
    assert len(seen) == 8 and rec.calls("frozen") == 4
    assert not torch.equal(reference, plain_output)
