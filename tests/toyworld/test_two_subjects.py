"""The two-subject benchmark's quick run: its JSON keys, readings that are shares, and regions that
act: without them both subjects' injections cover the whole image, with them each half gets only
its own, so the readings must differ.

``python -m benchmarks.toy_world.two_subjects --quick --json`` on the quick base: one training
seed, short training, few samples. The figures of docs/toy_world.md come from the full run.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.toy_world import two_subjects

ARMS = ("no_regions", "regions", "regions_feathered")
KEYS = {"identity_a", "identity_b", "leak"}


@pytest.fixture(scope="module")
def quick_result():
    return two_subjects.main(["--quick", "--json"])


def test_the_result_has_every_arm_with_the_keys_others_read(quick_result):
    assert quick_result["seeds"] == 1 and quick_result["quick"]
    assert set(quick_result["single"]) >= {"identity_a", "identity_b"}
    for arm in ARMS:
        assert set(quick_result[arm]) >= KEYS, (arm, KEYS - set(quick_result[arm]))
        for key in KEYS:
            assert 0.0 <= quick_result[arm][key] <= 1.0, (arm, key)
            low, high = quick_result[arm][f"{key}_range"]
            assert low <= quick_result[arm][key] <= high
    assert set(quick_result["holds"]) == {*ARMS, two_subjects.RECOMMENDED_ARM}
    assert len(quick_result["seed_rows"]) == 1


def test_regions_change_what_each_half_shows(quick_result):
    row = quick_result["seed_rows"][0]
    readings = [tuple(row[arm][k] for k in ("identity_a", "identity_b", "leak_colour")) for arm in ARMS]
    assert readings[0] != readings[1], "regions must change the samples"
    per_half = tuple(row[two_subjects.RECOMMENDED_ARM][k] for k in ("identity_a", "identity_b", "leak_colour"))
    assert per_half != readings[1], "one prompt per half must change the samples"


@pytest.mark.parametrize("area", [(0, 0, 8, 8), (0, 8, 8, 8), (2, 4, 4, 8), (0, 0, 8, 16)])
def test_area_prompts_weigh_their_crop_as_comfyui_does(area):
    """The benchmark's area conditioning fades an area's inner edges as ComfyUI's own sampler does
    (its ``get_area_and_mult`` on what *Conditioning (Set Area)* makes)."""
    from devtools.comfy_inprocess import import_comfy

    import_comfy()
    from comfy import samplers

    y, x, h, w = area
    latent = torch.zeros(1, 4, 8, 16)
    cond = {"area": (h, w, y, x), "strength": 1.0, "model_conds": {}, "uuid": "area"}
    expected = samplers.get_area_and_mult(cond, latent, torch.tensor([999.0])).mult[0, 0]
    assert torch.allclose(two_subjects.area_weights(area, (8, 16)), expected)
