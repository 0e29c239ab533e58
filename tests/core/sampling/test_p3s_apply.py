"""P3S Apply on a tiny SD1.5-shaped model: identity when untrained, effect when trained,
schedule skipping, cond-only batching, composition with other patches, input left unchanged."""

from __future__ import annotations

import copy

import pytest
import torch

from devtools.tiny_models import controlnet_for

from ..p3s_support import ENCODER, copy_batches, import_pack_module, randomise_injection, sample

patching = import_pack_module("nodes.p3s_patching")
injection = import_pack_module("p3s_core.sampling.injection")
injection_pass = import_pack_module("p3s_core.model.injection_pass")


class StepSchedule:
    """0 before ``threshold`` progress, 1 after; records the progress values it was asked for."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.asked: list[float] = []

    def weight(self, progress: float) -> float:
        self.asked.append(progress)
        return 0.0 if progress < self.threshold else 1.0


def test_untrained_p3s_reproduces_the_plain_model(base, p3s, hint, plain_output):
    runs, handle = copy_batches(p3s)
    with torch.no_grad():  # hint_conv non-zero too: the copy's input changes, output must not
        p3s.hint_conv.weight.normal_()
    out = sample(patching.apply_p3s(base, p3s, hint))
    handle.remove()
    assert len(runs) == 4, "the copy must run on every step"
    assert torch.equal(out, plain_output)


def test_trained_injection_changes_the_output(base, p3s, hint, plain_output):
    randomise_injection(p3s)
    out = sample(patching.apply_p3s(base, p3s, hint))
    assert (out - plain_output).abs().max() > 1e-3
    weaker = sample(patching.apply_p3s(base, p3s, hint, strength=0.5))
    assert (weaker - plain_output).abs().max() < (out - plain_output).abs().max()


def test_zero_strength_skips_the_copy(base, p3s, hint, plain_output):
    randomise_injection(p3s)
    runs, handle = copy_batches(p3s)
    out = sample(patching.apply_p3s(base, p3s, hint, strength=0.0))
    handle.remove()
    assert runs == []
    assert torch.equal(out, plain_output)


def test_schedule_zero_steps_do_not_run_the_copy(base, p3s, hint):
    randomise_injection(p3s)
    steps = 6
    schedule = StepSchedule(threshold=0.5)
    runs, handle = copy_batches(p3s)
    sample(patching.apply_p3s(base, p3s, hint, schedule=schedule), steps=steps)
    handle.remove()
    progress = [i / (steps - 1) for i in range(steps)]
    assert schedule.asked == pytest.approx(progress)
    assert len(runs) == sum(schedule.weight(s) != 0.0 for s in progress)
    assert 0 < len(runs) < steps


def test_start_end_percent_window_limits_the_copy(base, p3s, hint):
    randomise_injection(p3s)
    runs_all, handle = copy_batches(p3s)
    sample(patching.apply_p3s(base, p3s, hint), steps=6)
    handle.remove()
    runs_window, handle = copy_batches(p3s)
    sample(patching.apply_p3s(base, p3s, hint, start_percent=0.0, end_percent=0.5), steps=6)
    handle.remove()
    assert 0 < len(runs_window) < len(runs_all)


def test_cond_only_runs_the_copy_on_cond_rows(base, p3s, hint, plain_output):
    randomise_injection(p3s)
    runs_cond, handle = copy_batches(p3s)
    out_cond = sample(patching.apply_p3s(base, p3s, hint, apply_to_uncond=False), batch=2)
    handle.remove()
    runs_all, handle = copy_batches(p3s)
    out_all = sample(patching.apply_p3s(base, p3s, hint, apply_to_uncond=True), batch=2)
    handle.remove()
    # ComfyUI batches cond and uncond of a 2-sample latent into one 4-row call per step.
    assert set(runs_cond) == {2}
    assert set(runs_all) == {4}
    assert not torch.equal(out_cond, out_all)


def test_injection_patch_adds_only_on_cond_rows():
    rows = injection.injected_rows([1, 0], batch=4, apply_to_uncond=False)
    assert rows.tolist() == [2, 3]
    patch = injection_pass.make_injection_patch("attn2", "key")
    n = torch.zeros(4, 3, 2)
    delta = torch.ones(2, 3, 2)
    extra = {
        "block": ("input", 1),
        "block_index": 0,
        "key": {"deltas": {("input", 1, 0, "attn2"): delta}, "rows": rows},
    }
    out = patch(n, extra)
    assert torch.equal(out[2:], delta) and not out[:2].any()
    assert not n.any(), "the patch must not modify its input in place"
    assert patch(n, {"block": ("input", 2), "block_index": 0, **{"key": extra["key"]}}) is n


def test_references_cycle_over_the_samples_of_each_chunk():
    hint = torch.arange(2.0).view(2, 1, 1, 1).expand(2, 4, 2, 2)
    rows = injection.injected_rows([1, 0], batch=6, apply_to_uncond=False)  # 3 samples per chunk
    cycled = injection.hint_for_rows(hint, rows, chunk=3, size=(2, 2), mode="cycle")
    assert cycled[:, 0, 0, 0].tolist() == [0.0, 1.0, 0.0]
    mean = injection.hint_for_rows(hint, rows, chunk=3, size=(4, 4), mode="mean")
    assert mean.shape == (3, 4, 4, 4) and torch.allclose(mean, torch.full_like(mean, 0.5))
    with pytest.raises(ValueError, match="reference_mode"):
        injection.InjectionSettings(reference_mode="first")


def test_patching_composes_with_attention_and_weight_patches(base, p3s, hint, plain_output):
    randomise_injection(p3s)
    before_options = copy.deepcopy(base.model_options)
    before_weights = {k: v.clone() for k, v in base.model.diffusion_model.state_dict().items()}

    def scale_attn2(n, extra_options):
        return n * 1.5

    key = "diffusion_model.input_blocks.1.1.proj_in.weight"
    weight = base.model.diffusion_model.input_blocks[1][1].proj_in.weight
    lora_like = {key: (torch.randn(weight.shape, generator=torch.Generator().manual_seed(9)) * 0.2,)}

    p3s_only = sample(patching.apply_p3s(base, p3s, hint))
    other = base.clone()
    other.set_model_attn2_output_patch(scale_attn2)
    other.add_patches(lora_like, 1.0)
    other_only = sample(other)

    p3s_then_other = patching.apply_p3s(base, p3s, hint).clone()
    p3s_then_other.set_model_attn2_output_patch(scale_attn2)
    p3s_then_other.add_patches(lora_like, 1.0)
    runs, handle = copy_batches(p3s)
    both = sample(p3s_then_other)
    handle.remove()
    other_then_p3s = sample(patching.apply_p3s(other, p3s, hint))

    assert len(runs) == 4
    # Either order keeps both effects: the result differs from each patch alone.
    for combined in (both, other_then_p3s):
        for single in (plain_output, p3s_only, other_only):
            assert (combined - single).abs().max() > 1e-3

    assert base.model_options == before_options
    assert base.patches == {} and base.wrappers == {} and base.additional_models == {}
    # ComfyUI merges weight patches into the shared module while a patched clone is loaded and
    # restores them when the base is loaded again: the base samples and holds its own weights.
    assert torch.equal(sample(base), plain_output)
    after_weights = base.model.diffusion_model.state_dict()
    assert all(torch.equal(before_weights[k], after_weights[k]) for k in before_weights)


def test_p3s_composes_with_a_controlnet(base, p3s, hint, plain_output):
    randomise_injection(p3s)
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(8))
    control = controlnet_for(base).set_cond_hint(image, 1.0, (0.0, 1.0))
    control_only = sample(base, control=control)
    p3s_only = sample(patching.apply_p3s(base, p3s, hint))
    runs, handle = copy_batches(p3s)
    both = sample(patching.apply_p3s(base, p3s, hint), control=control)
    handle.remove()
    assert len(runs) == 4
    assert (control_only - plain_output).abs().max() > 1e-3, "the ControlNet must have an effect"
    for single in (plain_output, control_only, p3s_only):
        assert (both - single).abs().max() > 1e-3


def test_two_p3s_models_stack(base, hint):
    first = patching.new_p3s_model(base, ENCODER)
    second = patching.new_p3s_model(base, ENCODER)
    randomise_injection(first, seed=1)
    randomise_injection(second, seed=2)
    runs_first, h1 = copy_batches(first)
    runs_second, h2 = copy_batches(second)
    both = sample(patching.apply_p3s(patching.apply_p3s(base, first, hint), second, hint))
    h1.remove()
    h2.remove()
    only_first = sample(patching.apply_p3s(base, first, hint))
    assert len(runs_first) == len(runs_second) == 4
    assert (both - only_first).abs().max() > 1e-3


def test_p3s_model_is_registered_for_memory_management(base, p3s, hint):
    patched = patching.apply_p3s(base, p3s, hint)
    extra = patched.get_additional_models()
    assert len(extra) == 1 and extra[0].model is p3s
    assert base.get_additional_models() == []
    again = patching.apply_p3s(base, p3s, hint, strength=0.5)
    assert again.get_additional_models()[0] is extra[0], "one patcher per P3S model"


def test_step_progress_from_sigmas_or_timestep():
    sigmas = torch.tensor([14.6, 7.0, 3.0, 1.0, 0.0])
    assert [injection.step_progress(float(s), sigmas, 0.0) for s in sigmas[:-1]] == [0.0, 1 / 3, 2 / 3, 1.0]
    assert injection.step_progress(0.0, None, 999.0) == 0.0
    assert injection.step_progress(0.0, None, 0.0) == 1.0
