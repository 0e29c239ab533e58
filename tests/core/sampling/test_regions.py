"""P3S Apply in a region (our addition), on the tiny SD1.5-shaped model: the region maths, exact
equalities with no region and with plain sampling, the injection confined to its tokens at the
patch, resizing, batch errors before sampling, several subjects, and ComfyUI's area and mask
conditioning beside it."""

from __future__ import annotations

import pytest
import torch

from ..p3s_support import ENCODER, conditioning, copy_batches, import_pack_module, randomise_injection

patching = import_pack_module("nodes.p3s_patching")
regions = import_pack_module("p3s_core.sampling.regions")
errors = import_pack_module("p3s_core.errors")

H, W = 8, 12  # a latent that is not square: the token grids come from original_shape
FIRST_SITE = ("input", 1)  # the first injected layer in the frozen model's forward order


def left_half(h: int = H, w: int = W, batch: int = 1) -> torch.Tensor:
    mask = torch.zeros(batch, h, w)
    mask[..., : w // 2] = 1.0
    return mask


def sample_wide(model, batch: int = 1, steps: int = 3, positive=None, negative=None) -> torch.Tensor:
    """Euler + CFG sampling of a ``[batch, 4, H, W]`` latent with fixed seeds."""
    import comfy.sample

    pos, neg = conditioning(32)
    latent = torch.zeros(batch, 4, H, W)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(1))
    return comfy.sample.sample(
        model, noise, steps, 4.0, "euler", "normal", positive or pos, negative or neg, latent, seed=1, disable_pbar=True
    )


class SiteProbe:
    """What the P3S patch added at ``site``, per model call: attn1 output patches before and after it
    (plain closures: ComfyUI deep-copies ``model_options``, and a bound method with it)."""

    def __init__(self, site=FIRST_SITE):
        self.before: list[torch.Tensor] = []
        self.added: list[torch.Tensor] = []
        before, added = self.before, self.added

        def at_site(extra) -> bool:
            return tuple(extra["block"]) == site and extra.get("block_index", 0) == 0

        def first(n, extra):
            if at_site(extra):
                before.append(n.clone())
            return n

        def last(n, extra):
            if at_site(extra):
                added.append(n - before[len(added)])
            return n

        self.first, self.last = first, last


def probed(base, apply):
    """``base`` with a probe's first patch, then ``apply(model)`` (the P3S patches), then its last patch."""
    probe = SiteProbe()
    model = base.clone()
    model.set_model_attn1_output_patch(probe.first)
    model = apply(model)
    model.set_model_attn1_output_patch(probe.last)
    return model, probe


@pytest.fixture
def trained(p3s):
    randomise_injection(p3s)
    with torch.no_grad():
        p3s.hint_conv.weight.normal_(generator=torch.Generator().manual_seed(2))
    return p3s


# --- the region maths (p3s_core/sampling/regions.py) ---


def test_token_grid_follows_original_shape_at_every_level_and_odd_sizes():
    assert regions.token_grid([2, 4, 64, 96], 64 * 96) == (64, 96)
    assert regions.token_grid([2, 4, 64, 96], 16 * 24) == (16, 24)
    assert regions.token_grid([2, 4, 63, 95], 32 * 48) == (32, 48)  # stride-2 convs round up
    assert regions.token_grid([2, 4, 63, 95], 8 * 12) == (8, 12)
    assert regions.token_grid([1, 4, 96, 64], 48 * 32) == (48, 32)
    assert regions.token_grid([1, 4, 10, 20], 8) == (2, 4)  # no level holds 8: the nearest ratio


def test_resizing_keeps_constants_exact_and_averages_edges():
    ones = torch.ones(1, 64, 96)
    assert torch.equal(regions.resize_mask(ones, (8, 12)), torch.ones(1, 8, 12))
    assert torch.equal(regions.resize_mask(torch.ones(1, 3, 5), (8, 12)), torch.ones(1, 8, 12))
    half = regions.resize_mask(left_half(64, 96), (8, 12))
    assert torch.equal(half, left_half())
    edge = regions.resize_mask(left_half(8, 12), (4, 3))  # 6 of 12 columns -> 1.5 of 3
    assert edge[0, 0].tolist() == [1.0, 0.5, 0.0]


def test_feather_is_a_linear_ramp_centred_on_the_edge_and_keeps_borders():
    ramp = regions.feather_mask(left_half(1, 12), 3)[0, 0]
    assert ramp[4:8].tolist() == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])
    assert torch.equal(regions.feather_mask(torch.ones(1, 6, 6), 5), torch.ones(1, 6, 6))
    feathered = regions.region_at_latent(left_half(8, 12), (8, 12), feather=16, pixels_per_latent=8)
    assert feathered[0, 0, 0] == 1.0 and feathered[0, 0, -1] == 0.0
    assert 0.0 < feathered[0, 0, 5] < 1.0 and 0.0 < feathered[0, 0, 6] < 1.0


def test_the_hint_goes_into_the_regions_box():
    hint = torch.arange(16.0).view(1, 1, 4, 4)
    region = torch.zeros(1, 4, 8)
    region[..., 4:] = 1.0
    placed = regions.place_hint(hint, region)
    assert torch.equal(placed[0, 0, :, 4:], hint[0, 0]) and not placed[0, 0, :, :4].any()
    assert torch.equal(regions.place_hint(hint, torch.ones(1, 4, 4)), hint)
    assert not regions.place_hint(hint, torch.zeros(1, 4, 4)).any()


# --- sampling ---


def test_all_ones_region_equals_no_region_exactly(base, trained, hint):
    no_region = sample_wide(patching.apply_p3s(base, trained, hint))
    ones = sample_wide(patching.apply_p3s(base, trained, hint, region=torch.ones(1, 8 * H, 8 * W)))
    feathered = sample_wide(patching.apply_p3s(base, trained, hint, region=torch.ones(H, W), region_feather=24))
    assert torch.equal(ones, no_region)
    assert torch.equal(feathered, no_region)


def test_all_zeros_region_equals_plain_sampling_exactly(base, trained, hint):
    plain = sample_wide(base)
    runs, handle = copy_batches(trained)
    zeros = sample_wide(patching.apply_p3s(base, trained, hint, region=torch.zeros(1, H, W)))
    handle.remove()
    assert torch.equal(zeros, plain)
    assert runs == [], "an empty region skips the copy"
    assert (sample_wide(patching.apply_p3s(base, trained, hint)) - plain).abs().max() > 1e-3


def test_a_left_half_region_leaves_the_first_layers_right_half_tokens_untouched(base, trained, hint):
    model, probe = probed(base, lambda m: patching.apply_p3s(m, trained, hint, region=left_half(8 * H, 8 * W)))
    sample_wide(model)
    assert len(probe.added) == 3
    for added in probe.added:  # [cond + uncond rows, H * W tokens, C]; the copy injects on the cond rows
        grid = added.view(added.shape[0], H, W, -1)
        assert not grid[..., W // 2 :, :].any(), "nothing added right of the region"
        assert grid[..., : W // 2, :].abs().amax() > 1e-4, "the injection acts inside the region"


def test_feathered_edge_tokens_get_part_of_the_injection(base, trained, hint):
    hard, probe_hard = probed(base, lambda m: patching.apply_p3s(m, trained, hint, region=left_half()))
    soft, probe_soft = probed(
        base, lambda m: patching.apply_p3s(m, trained, hint, region=left_half(), region_feather=24)
    )
    sample_wide(hard, steps=1)
    sample_wide(soft, steps=1)
    hard_cols = probe_hard.added[0].view(2, H, W, -1).abs().amax(dim=(0, 1, 3))
    soft_cols = probe_soft.added[0].view(2, H, W, -1).abs().amax(dim=(0, 1, 3))
    assert hard_cols[W // 2] == 0 and soft_cols[W // 2] > 0, "the feather reaches past the edge"
    assert soft_cols[-1] == 0, "but not to the far side"


def test_region_sizes_that_do_not_match_are_resized(base, trained, hint):
    at_latent = sample_wide(patching.apply_p3s(base, trained, hint, region=left_half()))
    at_image = sample_wide(patching.apply_p3s(base, trained, hint, region=left_half(8 * H, 8 * W)))
    assert torch.equal(at_image, at_latent)
    other_ratio = sample_wide(patching.apply_p3s(base, trained, hint, region=left_half(30, 30)))
    assert torch.isfinite(other_ratio).all()
    assert (other_ratio - sample_wide(patching.apply_p3s(base, trained, hint))).abs().max() > 1e-4


def test_a_region_of_the_wrong_batch_size_is_an_error_before_sampling(base, trained, hint):
    calls: list[int] = []
    handle = base.model.diffusion_model.register_forward_pre_hook(lambda _m, args: calls.append(1))
    model = patching.apply_p3s(base, trained, hint, region=left_half(batch=3))
    with pytest.raises(errors.P3SInputError, match="3 masks but the latent batch has 2 samples"):
        sample_wide(model, batch=2)
    handle.remove()
    assert calls == [], "refused before the first step"


def test_one_mask_per_sample_follows_the_samples(base, trained, hint):
    per_sample = torch.stack([left_half()[0], 1.0 - left_half()[0]])
    model, probe = probed(base, lambda m: patching.apply_p3s(m, trained, hint, region=per_sample))
    sample_wide(model, batch=2, steps=1)
    # rows: uncond samples 0-1, then cond samples 0-1 (cond_or_uncond [1, 0]); injected on cond rows
    grid = probe.added[0].view(4, H, W, -1)
    assert not grid[2, :, W // 2 :].any() and grid[2, :, : W // 2].abs().amax() > 1e-4
    assert not grid[3, :, : W // 2].any() and grid[3, :, W // 2 :].abs().amax() > 1e-4


def test_two_subjects_each_in_its_region(base, hint):
    first = patching.new_p3s_model(base, ENCODER)
    second = patching.new_p3s_model(base, ENCODER)
    randomise_injection(first, seed=1)
    randomise_injection(second, seed=2)
    left, right = left_half(), 1.0 - left_half()

    def both(model):
        return patching.apply_p3s(patching.apply_p3s(model, first, hint, region=left), second, hint, region=right)

    model, probe = probed(base, both)
    only_first, probe_first = probed(base, lambda m: patching.apply_p3s(m, first, hint, region=left))
    only_second, probe_second = probed(base, lambda m: patching.apply_p3s(m, second, hint, region=right))
    for m in (model, only_first, only_second):
        sample_wide(m, steps=1)
    added = probe.added[0].view(2, H, W, -1)
    # at the first step all three see the same input: each half carries exactly one subject's injection
    assert torch.equal(added[..., : W // 2, :], probe_first.added[0].view(2, H, W, -1)[..., : W // 2, :])
    assert torch.equal(added[..., W // 2 :, :], probe_second.added[0].view(2, H, W, -1)[..., W // 2 :, :])


@pytest.fixture
def two_subjects(base):
    """Two P3S models with different random injections, and two prompts with their negative."""
    first = patching.new_p3s_model(base, ENCODER)
    second = patching.new_p3s_model(base, ENCODER)
    randomise_injection(first, seed=1)
    randomise_injection(second, seed=2)
    pos_a, negative = conditioning(32, seed=3)
    pos_b, _ = conditioning(32, seed=4)
    return (first, second), (pos_a, pos_b, negative)


def test_comfyui_mask_conditioning_beside_two_regioned_subjects(base, hint, two_subjects):
    """ConditioningSetMask (ComfyUI's own node) gives each half its own prompt: each subject's injection
    reaches the rows of the prompt whose mask covers its region, not the other prompt's rows."""
    import nodes

    (first, second), (pos_a, pos_b, negative) = two_subjects
    left, right = left_half(), 1.0 - left_half()
    set_mask = nodes.ConditioningSetMask()
    positive = nodes.ConditioningCombine().combine(
        set_mask.append(pos_a, left[0], "default", 1.0)[0], set_mask.append(pos_b, right[0], "default", 1.0)[0]
    )[0]
    model, probe = probed(
        base,
        lambda m: patching.apply_p3s(patching.apply_p3s(m, first, hint, region=left), second, hint, region=right),
    )
    out = sample_wide(model, positive=positive, negative=negative)
    assert torch.isfinite(out).all()
    assert (out - sample_wide(base, positive=positive, negative=negative)).abs().max() > 1e-4
    for added in probe.added:  # both masked prompts run in one call beside the uncond rows
        grid = added.view(3, H, W, -1)
        left_side = grid[:, :, : W // 2].flatten(1).abs().amax(dim=1)
        right_side = grid[:, :, W // 2 :].flatten(1).abs().amax(dim=1)
        # each prompt's rows get only the subject whose region lies in that prompt's mask
        assert sorted(((left_side > 0) | (right_side > 0)).tolist()) == [False, True, True]
        assert not ((left_side > 0) & (right_side > 0)).any(), "no subject in the other prompt's rows"


def test_mask_bounds_prompts_and_negatives_keep_each_half_to_its_subject(base, hint, two_subjects):
    """The two-subject recipe: one prompt per subject through ComfyUI's ConditioningSetMask with
    ``mask bounds`` (run on the mask's crop) and the negative on the same masks. Each half is then
    sampled on its own crop, and the regions, cropped alike, give each half its own subject only:
    each half is what that subject alone gives it (to float rounding: the copies run on other row sets)."""
    import nodes

    (first, second), (pos_a, pos_b, negative) = two_subjects
    left, right = left_half(), 1.0 - left_half()
    set_mask, combine = nodes.ConditioningSetMask(), nodes.ConditioningCombine()

    def per_half(a, b):
        halves = [set_mask.append(c, m[0], "mask bounds", 1.0)[0] for c, m in ((a, left), (b, right))]
        return combine.combine(*halves)[0]

    positive, negatives = per_half(pos_a, pos_b), per_half(negative, negative)

    def sample(*subjects):
        model = base
        for p3s, region in subjects:
            model = patching.apply_p3s(model, p3s, hint, region=region)
        return sample_wide(model, positive=positive, negative=negatives)

    both, plain = sample((first, left), (second, right)), sample()
    only_first, only_second = sample((first, left)), sample((second, right))
    half = W // 2
    close = {"rtol": 1e-5, "atol": 1e-3}
    torch.testing.assert_close(both[..., :half], only_first[..., :half], **close, msg="left: the first subject's")
    torch.testing.assert_close(both[..., half:], only_second[..., half:], **close, msg="right: the second's")
    torch.testing.assert_close(only_first[..., half:], plain[..., half:], **close, msg="no first in the right half")
    for side in (slice(None, half), slice(half, None)):
        assert (both[..., side] - plain[..., side]).abs().max() > 1e-4, "each half carries its subject"


def test_comfyui_area_conditioning_crops_the_region(base, trained, hint):
    """ConditioningSetArea runs the U-Net on a crop of the latent: the region is cropped alike."""
    import nodes

    pos, negative = conditioning(32)
    right_area = nodes.ConditioningSetArea().append(pos, 8 * W // 2, 8 * H, 8 * W // 2, 0, 1.0)[0]
    plain = sample_wide(base, positive=right_area, negative=negative)
    left_only = sample_wide(
        patching.apply_p3s(base, trained, hint, region=left_half()), positive=right_area, negative=negative
    )
    right_only = sample_wide(
        patching.apply_p3s(base, trained, hint, region=1.0 - left_half()), positive=right_area, negative=negative
    )
    assert torch.equal(left_only, plain), "a region left of the area does not reach the area's crop"
    assert (right_only - plain).abs().max() > 1e-4, "a region over the area does"


def test_bad_regions_are_refused_before_anything_runs(base, trained, hint):
    with pytest.raises(errors.P3SInputError, match="NaN"):
        patching.apply_p3s(base, trained, hint, region=torch.full((1, H, W), float("nan")))
    with pytest.raises(errors.P3SInputError, match=r"\[H, W\] or \[batch, H, W\]"):
        patching.apply_p3s(base, trained, hint, region=torch.ones(1, 1, 1, H, W))
    with pytest.raises(errors.P3SInputError, match="region_feather"):
        patching.apply_p3s(base, trained, hint, region=left_half(), region_feather=-1)
