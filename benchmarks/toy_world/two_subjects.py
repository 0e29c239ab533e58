"""Two subjects in one picture: two P3S models, trained apart, applied together with regions.

``python -m benchmarks.toy_world.two_subjects --json [--seeds N] [--samples N] [--quick]``
trains, per training seed, P3S on subject A (the table's yellow striped diamond, "sks") and on
subject B (a red plain square, "zwx": every attribute differs from A's), each from its own four
clean references, as the table's runs train. Then it samples a wide latent (8 x 16: two 8 x 8
halves, each the size the evaluator reads) with the prompt "a photo of sks and zwx" and both P3S
models applied together, the pack's own wrappers chained as two P3S Apply nodes chain them:

* ``no_regions``: both on the whole image (P3S Apply as it was),
* ``regions``: A in the left half, B in the right half,
* ``regions_feathered``: the same with a 3-pixel feather (the toy latent is its image: 1 pixel
  per latent pixel),
* beside them, one prompt per half ("a photo of sks" on the left, "a photo of zwx" on the right)
  as ComfyUI's conditioning nodes give it, the regions cropped and masked as ComfyUI's sampler
  hands them: on the halves' masks (*Conditioning (Set Mask)*, run on the whole latent), with and
  without regions (``mask_prompts_regions``, ``mask_prompts_no_regions``); on the halves' boxes
  (*Conditioning (Set Area)*, or *Set Mask* "mask bounds": run on the crop) with the negative on the
  same boxes, with and without regions (``area_prompts_regions``, ``area_prompts_no_regions``),
  with the negative on the whole image (``area_prompts_whole_negative_regions``), and beside the
  prompt naming both (``area_prompts_global_regions``).

The evaluator reads each half: ``identity_a`` is the left half's identity against A (share of
colour, pattern and shape that are A's), ``identity_b`` the right half's against B, ``leak`` the
share of half-samples read as the *other* subject (colour, pattern and shape together: the left
half read as B, or the right half as A), ``leak_colour`` the share of halves in which the other
subject's colour shows (>= 3 pixels nearest it, model-free). ``single`` is each subject alone on
its own 8 x 8 image with its own prompt, ``base`` the wide image without P3S. It prints one JSON
object with those keys, each a mean over the training seeds with ``<key>_range`` beside it, the
``targets`` and whether they hold, and ``seed_rows``. ``--quick`` is the CI version (the quick base,
one seed, short training, 8 samples; of the per-half arms only ``area_prompts_regions``, the
recommended way).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace

import torch

from p3s_core.model.injection_pass import make_injection_patch
from p3s_core.sampling.injection import InjectionSettings, RegionSettings, make_diffusion_wrapper
from p3s_core.sampling.regions import AreaLog

from . import evaluator as judge
from . import world
from .bench_setup import load_bench, log
from .lookalikes import REFERENCE_SEED
from .methods import train_p3s_model
from .metrics import THING_ATTRIBUTES, read_as
from .runs import DEFAULT_TRAIN
from .sampling import sample_schedule
from .subject import DISTRACTOR, SUBJECT, reference_scenes, training_data

SUBJECT_B = world.Thing("square", "red", "plain")
WORD_A, WORD_B = "sks", "zwx"
PROMPT_A, PROMPT_B = f"a photo of {WORD_A}", f"a photo of {WORD_B}"
PROMPT_BOTH = f"a photo of {WORD_A} and {WORD_B}"
HALF = world.LATENT_SIZE
COND, UNCOND = 0, 1  # ComfyUI's cond_or_uncond values
FEATHER = 3  # latent (= image) pixels in the toy world
ARMS = ("no_regions", "regions", "regions_feathered")
# Beside them (our addition): one prompt per half through mask conditioning or area conditioning,
# with and without regions, the area prompts against a whole-image negative, and the area prompts
# beside one whole-image prompt naming both.
EXTRA_ARMS = (
    "mask_prompts_regions",
    "mask_prompts_no_regions",
    "area_prompts_regions",
    "area_prompts_no_regions",
    "area_prompts_whole_negative_regions",
    "area_prompts_global_regions",
)
# The way of writing the prompts that the pack recommends (one per subject on its region's box, the
# negative on the same boxes): run in the quick version too.
RECOMMENDED_ARM = "area_prompts_regions"
QUICK = {"epochs": 15, "samples": 8}
TARGETS = {
    "identity": "identity_a and identity_b each within 0.1 of the subject's single identity",
    "leak": "leak < 0.10",
}


def subject_data(thing: world.Thing, prompt: str, encoder):
    """Training data of ``thing`` alone on the four reference scenes, captioned ``prompt``."""
    scenes = reference_scenes(REFERENCE_SEED, False, thing, DISTRACTOR)
    data = training_data(scenes, encoder, remove_distractor=False)
    return replace(data, contexts=encoder.encode([prompt] * len(scenes)))


def half_masks() -> tuple[torch.Tensor, torch.Tensor]:
    """``[1, 8, 16]`` regions: the left half (subject A) and the right half (subject B)."""
    left = torch.zeros(1, HALF, 2 * HALF)
    left[..., :HALF] = 1.0
    return left, 1.0 - left


@dataclass(frozen=True)
class RegionalPrompt:
    """One conditioning (a prompt or a negative) of the wide image, as ComfyUI's nodes make it: ``text``, and where it
    counts: a ``mask`` ``[8, width]`` (*Conditioning (Set Mask)*: run on the whole latent, its
    prediction weighted by the mask) or an ``area`` ``(y, x, h, w)`` in latent pixels (*Conditioning
    (Set Area)*, or *Set Mask* with ``set_cond_area`` "mask bounds": run on that crop only, its inner
    edges faded as ComfyUI's ``get_area_and_mult`` fades them); neither is the whole image."""

    text: str
    mask: torch.Tensor | None = None
    area: tuple[int, int, int, int] | None = None


def arm_prompts(arm: str) -> tuple[str | list[RegionalPrompt], str | list[RegionalPrompt]]:
    """The positive and negative conditioning of ``arm``: one prompt naming both, or one per half
    (the halves' masks, or their areas; the empty negative on the same areas unless the arm says
    ``whole_negative``), with the prompt naming both over the whole image beside the areas in
    ``area_prompts_global_regions``."""
    left, right = (m[0] for m in half_masks())
    if arm.startswith("mask_prompts"):
        return [RegionalPrompt(PROMPT_A, mask=left), RegionalPrompt(PROMPT_B, mask=right)], ""
    if not arm.startswith("area_prompts"):
        return PROMPT_BOTH, ""
    halves = [(0, 0, HALF, HALF), (0, HALF, HALF, HALF)]
    positive = [RegionalPrompt(text, area=area) for text, area in zip((PROMPT_A, PROMPT_B), halves, strict=True)]
    negative = [RegionalPrompt("", area=area) for area in halves]
    if arm == "area_prompts_whole_negative_regions":
        return positive, ""
    if arm == "area_prompts_global_regions":
        return [RegionalPrompt(PROMPT_BOTH), *positive], [RegionalPrompt(""), *negative]
    return positive, negative


def area_weights(area: tuple[int, int, int, int], full: tuple[int, int]) -> torch.Tensor:
    """``[h, w]``: an area conditioning's weight in its crop: 1, faded over ``min(8, side // 4)`` pixels
    at every edge that is not the image's own (ComfyUI's fuzz of area conditioning)."""
    y, x, h, w = area
    weights = torch.ones(h, w)
    for axis, (offset, side, whole) in enumerate(((y, h, full[0]), (x, w, full[1]))):
        fade = min(8, side // 4)
        ramp = torch.arange(1, fade + 1, dtype=torch.float32) / max(fade, 1)
        view = weights if axis == 0 else weights.T
        if offset != 0:
            view[:fade] *= ramp.unsqueeze(1)
        if offset + side < whole:
            view[side - fade :] *= ramp.flip(0).unsqueeze(1)
    return weights


def sample_with(
    unet,
    applications: list[tuple[object, torch.Tensor, RegionSettings | None]],
    prompt: str | list[RegionalPrompt],
    count: int,
    encoder,
    width: int,
    seed: int = 2024,
    steps: int = 20,
    cfg: float = 7.5,
    negative: str | list[RegionalPrompt] = "",
) -> torch.Tensor:
    """Euler samples ``[count, 4, 8, width]`` of ``prompt`` (against ``negative``) with every
    ``(p3s, hint, region)`` applied, each through its own ``make_diffusion_wrapper`` and injection
    patches, chained as ComfyUI chains the wrappers of two P3S Apply nodes.

    A list of :class:`RegionalPrompt` is what *Conditioning Combine* of several conditionings gives
    ComfyUI's sampler, batched as its ``calc_cond_batch`` batches them: every whole-latent
    conditioning (negative first) in one model call, every area conditioning (one size) on its crop
    in another; each side's prediction is its conditionings' predictions weighted by their masks or
    areas, divided by the weights' sum. The regions crop and mask alike through the
    :class:`AreaLog` that the sampler fills.
    """
    full = (HALF, width)
    timesteps, sigmas = sample_schedule(steps)
    noise = torch.randn((count, 4, *full), generator=torch.Generator().manual_seed(seed))
    conds = [
        (kind, f"{name}{i}", p)
        for kind, name, side in ((UNCOND, "uncond", negative), (COND, "prompt", prompt))
        for i, p in enumerate([RegionalPrompt(side)] if isinstance(side, str) else side)
    ]
    whole = [c for c in conds if c[2].area is None]
    areas = [c for c in conds if c[2].area is not None]
    if len({p.area[2:] for _, _, p in areas}) > 1:
        raise ValueError("the area prompts here must share one size (ComfyUI would batch them apart)")
    if not (isinstance(prompt, str) and isinstance(negative, str)):  # what calc_cond_batch records
        log = AreaLog(
            full,
            {u: p.area[:2] for _, u, p in areas},
            {u: p.mask.unsqueeze(0) for _, u, p in whole if p.mask is not None},
        )
        applications = [(p, h, replace(r, areas=log) if r is not None else None) for p, h, r in applications]
    call = _chained_call(unet, applications)
    batches = [(group, _contexts(group, encoder, count)) for group in (whole, areas) if group]

    x = noise * sigmas[0]
    with torch.no_grad():
        for i in range(steps):
            sigma = sigmas[i]
            scaled = x / torch.sqrt(sigma**2 + 1.0)
            sums = {kind: [torch.zeros_like(x), torch.full(full, 1e-37)] for kind in (COND, UNCOND)}
            for group, ctx in batches:
                crops = [_crop(scaled, p.area) for _, _, p in group]
                options = {
                    "cond_or_uncond": [kind for kind, _, _ in group],
                    "sigmas": sigma.repeat(len(group) * count),
                    "sample_sigmas": sigmas,
                    "patches": call.patches,
                    "uuids": [u for _, u, _ in group],
                }
                eps = call(torch.cat(crops), timesteps[i].float().repeat(len(group) * count), ctx, options)
                for e, (kind, _, p) in zip(eps.chunk(len(group)), group, strict=True):
                    acc, total = sums[kind]
                    if p.area is None:
                        weight = p.mask if p.mask is not None else torch.ones(full)
                        sums[kind] = [acc + e * weight, total + weight]
                    else:
                        y, x0, h, w = p.area
                        weight = area_weights(p.area, full)
                        acc[..., y : y + h, x0 : x0 + w] += e * weight
                        total[y : y + h, x0 : x0 + w] += weight
            eps_c, eps_u = (sums[kind][0] / sums[kind][1] for kind in (COND, UNCOND))
            x = x + (eps_u + cfg * (eps_c - eps_u)) * (sigmas[i + 1] - sigma)
    return x


def _contexts(group: list, encoder, count: int) -> torch.Tensor:
    return torch.cat([encoder.encode([p.text] * count) for _, _, p in group])


def _crop(x: torch.Tensor, area: tuple[int, int, int, int] | None) -> torch.Tensor:
    if area is None:
        return x
    y, x0, h, w = area
    return x[..., y : y + h, x0 : x0 + w]


def _chained_call(unet, applications):
    """The bare U-Net inside every application's diffusion wrapper, chained as ComfyUI chains two
    P3S Apply nodes' wrappers; ``.patches`` holds their injection patches."""
    patches: dict[str, list] = {"attn1_output_patch": [], "attn2_output_patch": []}

    def base_call(x, t, context, y, control, options, **kwargs):
        return unet(x, t, context=context, transformer_options=options)

    base_call.class_obj = unet
    call = base_call
    for i, (p3s, hint, region) in enumerate(applications):
        key = f"p3s_two_subjects_{i}"
        wrapper = make_diffusion_wrapper(p3s, hint, InjectionSettings(), None, key, region)
        for attn in ("attn1", "attn2"):
            patches[f"{attn}_output_patch"].append(make_injection_patch(attn, key))

        def chained(x, t, context, y, control, options, _wrapper=wrapper, _inner=call, **kwargs):
            return _wrapper(_inner, x, t, context, y, control, options, **kwargs)

        chained.class_obj = unet
        call = chained

    def model_call(x, t, context, options):
        return call(x, t, context, None, None, options)

    model_call.patches = patches
    return model_call


def identity(read: dict[str, list[str]], thing: world.Thing) -> float:
    """Mean over colour, pattern and shape of the share of samples read as ``thing``'s."""
    return sum(sum(v == getattr(thing, k) for v in read[k]) / len(read[k]) for k in THING_ATTRIBUTES) / 3


def read_halves(evaluator, samples: torch.Tensor) -> dict[str, float]:
    """The evaluator's reading of each half of ``[N, 4, 8, 16]`` samples: identities, leak."""
    left, right = samples[..., :HALF], samples[..., HALF:]
    read_left, read_right = evaluator.predict(left), evaluator.predict(right)
    colour_left = judge.colour_presence(left, SUBJECT_B.colour).float().mean()
    colour_right = judge.colour_presence(right, SUBJECT.colour).float().mean()
    return {
        "identity_a": identity(read_left, SUBJECT),
        "identity_b": identity(read_right, SUBJECT_B),
        "leak": (read_as(read_left, SUBJECT_B) + read_as(read_right, SUBJECT)) / 2,
        "leak_colour": float(colour_left + colour_right) / 2,
    }


def run_seed(
    seed: int, unet, evaluator, encoder, epochs: int | None, samples: int, log=print, extra_arms: bool = True
) -> dict:
    """Both subjects trained with ``seed``; every arm's readings (``extra_arms``: the mask-prompt arms too)."""
    start = time.perf_counter()
    settings = replace(DEFAULT_TRAIN, seed=seed, **({"epochs": epochs} if epochs else {}))
    models = {}
    for name, thing, prompt in (("a", SUBJECT, PROMPT_A), ("b", SUBJECT_B, PROMPT_B)):
        data = subject_data(thing, prompt, encoder)
        p3s, _ = train_p3s_model(unet, data, settings)
        with torch.no_grad():
            hint = p3s.encoder(data.tokens, data.mask_grids, data.latents, data.latent_masks)
        models[name] = (p3s, hint)
    train_seconds = time.perf_counter() - start

    (p3s_a, hint_a), (p3s_b, hint_b) = models["a"], models["b"]
    single_a = evaluator.predict(sample_with(unet, [(p3s_a, hint_a, None)], PROMPT_A, samples, encoder, HALF))
    single_b = evaluator.predict(sample_with(unet, [(p3s_b, hint_b, None)], PROMPT_B, samples, encoder, HALF))
    row: dict = {
        "seed": seed,
        "single": {"identity_a": identity(single_a, SUBJECT), "identity_b": identity(single_b, SUBJECT_B)},
    }
    left, right = half_masks()
    arms = {
        "no_regions": (None, None),
        "regions": (RegionSettings(left), RegionSettings(right)),
        "regions_feathered": (RegionSettings(left, FEATHER), RegionSettings(right, FEATHER)),
    }
    arms[RECOMMENDED_ARM] = arms["regions"]
    if extra_arms:
        arms["area_prompts_no_regions"] = arms["mask_prompts_no_regions"] = arms["no_regions"]
        arms["mask_prompts_regions"] = arms["area_prompts_whole_negative_regions"] = arms["regions"]
        arms["area_prompts_global_regions"] = arms["regions"]
    for arm, (region_a, region_b) in arms.items():
        positive, negative = arm_prompts(arm)
        applied = [(p3s_a, hint_a, region_a), (p3s_b, hint_b, region_b)]
        shots = sample_with(unet, applied, positive, samples, encoder, 2 * HALF, negative=negative)
        row[arm] = read_halves(evaluator, shots)
    row["base"] = read_halves(evaluator, sample_with(unet, [], PROMPT_BOTH, samples, encoder, 2 * HALF))
    row["train_s"] = train_seconds
    row["seconds"] = time.perf_counter() - start
    log("SEED " + json.dumps(row))
    return row


def summarise(rows: list[dict]) -> dict:
    """Per arm and key: the mean over seeds and ``<key>_range``; the targets and whether they hold."""
    out: dict = {}
    for arm in ("single", *ARMS, *EXTRA_ARMS, "base"):
        if arm not in rows[0]:
            continue
        out[arm] = {}
        for key in rows[0][arm]:
            values = [r[arm][key] for r in rows]
            out[arm][key] = sum(values) / len(values)
            out[arm][f"{key}_range"] = [min(values), max(values)]
    holds = {}
    for arm in (a for a in (*ARMS, *EXTRA_ARMS) if a in out):
        holds[arm] = {
            "identity": all(out["single"][k] - out[arm][k] <= 0.1 for k in ("identity_a", "identity_b")),
            "leak": out[arm]["leak"] < 0.1,
        }
    out["targets"] = TARGETS
    out["holds"] = holds
    return out


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark (see the module docstring); returns the printed result."""
    from .host import autograd_safe_attention

    with autograd_safe_attention():
        return _main(argv)


def _main(argv: list[str] | None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.toy_world.two_subjects", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument("--quick", action="store_true", help="the CI version: quick base, one seed, short training")
    parser.add_argument("--seeds", type=int, default=None, help="training seeds 0..N-1 (default 2, quick 1)")
    parser.add_argument("--samples", type=int, default=None, help="samples per arm (default 32, quick 8)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default 60, quick 15)")
    args = parser.parse_args(argv)
    seeds = args.seeds or (1 if args.quick else 2)
    if seeds < 1:
        parser.error("--seeds must be at least 1")
    samples = args.samples or (QUICK["samples"] if args.quick else 32)
    epochs = args.epochs or (QUICK["epochs"] if args.quick else None)

    bench = load_bench(args.quick)
    unet, base_info, encoder, evaluator = bench.unet, bench.base_info, bench.encoder, bench.evaluator
    rows = [run_seed(seed, unet, evaluator, encoder, epochs, samples, log, not args.quick) for seed in range(seeds)]
    result = {
        **summarise(rows),
        "subjects": {"a": [SUBJECT.colour, SUBJECT.pattern, SUBJECT.shape, WORD_A], "b": [*_names(SUBJECT_B), WORD_B]},
        "prompt": PROMPT_BOTH,
        "feather": FEATHER,
        "seeds": seeds,
        "samples": samples,
        "epochs": epochs or DEFAULT_TRAIN.epochs,
        "quick": args.quick,
        "seed_rows": rows,
        "base_model": base_info,
    }
    print(json.dumps(result) if args.json else json.dumps({k: v for k, v in result.items() if k != "seed_rows"}))
    return result


def _names(thing: world.Thing) -> list[str]:
    return [thing.colour, thing.pattern, thing.shape]


if __name__ == "__main__":
    main()
