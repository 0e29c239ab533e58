"""The table: every run of the toy world, trained and scored with fixed seeds."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from p3s_core.sampling.schedule import WeightSchedule
from p3s_core.training.settings import TrainSettings

from . import world
from .methods import INJECTION_RANK, dreambooth_like, train_p3s_model
from .metrics import Generator, score
from .selection import selected_references
from .subject import clip_standin_tokens, reference_scenes, training_data

DEFAULT_TRAIN = TrainSettings(epochs=60, lr=1e-4, seed=0)
OTHER_SUBJECT = world.Thing("square", "red", "plain")


@dataclass
class Run:
    name: str
    group: str
    method: str = "p3s"  # p3s | dreambooth | base
    settings: dict = field(default_factory=dict)
    zero_hint: bool = False
    references: str = "clean"  # clean | distractor_in | distractor_removed | distractor_points
    schedule: WeightSchedule | None = None
    sample_hint: str = "references"  # references | zero | other_subject
    reuse: str | None = None  # reuse the trained model of another run (sampling-time ablations)
    injection_rank: int = INJECTION_RANK  # -1 = the pack's auto; 0 = the paper's full C x C layers
    hint_region: str = "subject"  # the encoder's: subject (the pack's new models) | image


def all_runs(quick: bool) -> list[Run]:
    core = [
        Run("base", "core", method="base"),
        Run("p3s_full", "core"),
    ]
    if quick:
        return [*core, Run("p3s_full_injection_zeroed", "core", reuse="p3s_full", sample_hint="zero_injection")]
    # Ordered by priority: core comparison and hint ablations first, then the rest.
    return [
        *core,
        Run("dreambooth_like", "core", method="dreambooth"),
        Run("p3s_full_injection_zeroed", "hint", reuse="p3s_full", sample_hint="zero_injection"),
        Run("p3s_full_sample_zero_hint", "hint", reuse="p3s_full", sample_hint="zero"),
        Run("p3s_full_sample_other_subject", "hint", reuse="p3s_full", sample_hint="other_subject"),
        Run("p3s_hint_lr_scale1", "hint", settings={"hint_lr_scale": 1.0}),
        Run("p3s_hint_lr_scale1_sample_zero_hint", "hint", reuse="p3s_hint_lr_scale1", sample_hint="zero"),
        Run("p3s_hint_other", "hint", settings={"hint_source": "other"}),
        Run("p3s_hint_other_sample_zero_hint", "hint", reuse="p3s_hint_other", sample_hint="zero"),
        Run("p3s_hint_image", "hint", hint_region="image"),
        Run("p3s_hint_image_sample_zero_hint", "hint", reuse="p3s_hint_image", sample_hint="zero"),
        Run("p3s_hint_image_sample_other_subject", "hint", reuse="p3s_hint_image", sample_hint="other_subject"),
        Run("p3s_quadratic_up", "schedule", reuse="p3s_full", schedule=WeightSchedule("quadratic_up", 0.0, 1.0)),
        Run("p3s_quadratic_down", "schedule", reuse="p3s_full", schedule=WeightSchedule("quadratic_down", 1.0, 0.0)),
        Run("p3s_gamma0", "lac", settings={"gamma": 0.0}),
        Run("p3s_distractor_in", "selectivity", references="distractor_in"),
        Run("p3s_distractor_removed", "selectivity", references="distractor_removed"),
        Run("p3s_distractor_points", "selectivity", references="distractor_points"),
        Run("dreambooth_distractor_in", "selectivity", method="dreambooth", references="distractor_in"),
        Run("dreambooth_distractor_points", "selectivity", method="dreambooth", references="distractor_points"),
        Run("p3s_lac_all_layers", "lac", settings={"lac_layers": "all"}),
        Run("p3s_injection", "scope", settings={"scope": "injection"}),
        Run("p3s_attention", "scope", settings={"scope": "attention"}),
        Run("p3s_lora", "scope", settings={"scope": "lora"}),
        Run("p3s_full_injection_rank0", "rank", injection_rank=0),
        Run("p3s_injection_rank0", "rank", settings={"scope": "injection"}, injection_rank=0),
        Run("p3s_injection_low_rank_lr1", "rank", settings={"scope": "injection", "low_rank_lr_scale": 1.0}),
        # The hint path stays at its default 1e-2 (lr x hint_lr_scale) while the copy's lr changes.
        Run("p3s_lr1e-3", "lr", settings={"lr": 1e-3, "hint_lr_scale": 10.0}),
        Run("p3s_lr1e-5", "lr", settings={"lr": 1e-5, "hint_lr_scale": 1000.0}),
        Run("p3s_train_zero_hint", "hint", zero_hint=True),
    ]


def select_runs(runs: list[Run], names: list[str]) -> list[Run]:
    """The runs called ``names``, in that order, each after the run whose trained model it reuses."""
    known = {run.name: run for run in runs}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"Unknown run(s) {', '.join(unknown)}; the runs are: {', '.join(known)}.")
    chosen: list[Run] = []
    for name in names:
        chain = [known[name]]
        while chain[-1].reuse:
            chain.append(known[chain[-1].reuse])
        chosen += [run for run in reversed(chain) if run not in chosen]
    return chosen


SEED_MARK = "@seed"


def seeded_runs(runs: list[Run], seeds: int) -> list[Run]:
    """Each trained run once per training seed 0..``seeds``-1 (``<name>@seed<k>``), a sampling-time
    ablation after its own seed's model; the base (nothing trained) once."""
    if seeds <= 1:
        return list(runs)
    out = [run for run in runs if run.method == "base"]
    for seed in range(seeds):
        for run in runs:
            if run.method == "base":
                continue
            out.append(
                replace(
                    run,
                    name=f"{run.name}{SEED_MARK}{seed}",
                    settings={**run.settings, "seed": seed},
                    reuse=f"{run.reuse}{SEED_MARK}{seed}" if run.reuse else None,
                )
            )
    return out


def seed_summary(rows: list[dict]) -> list[dict]:
    """Rows of :func:`seeded_runs` merged per run: every metric's mean over the seeds, ``seeds``
    their count, and ``<metric>_min`` / ``<metric>_max`` of ``identity``."""
    merged: dict[str, list[dict]] = {}
    for row in rows:
        merged.setdefault(row["run"].split(SEED_MARK)[0], []).append(row)
    summary = []
    for name, group in merged.items():
        numbers = [key for key, value in group[0].items() if isinstance(value, int | float)]
        row = {"run": name, "group": group[0]["group"], "seeds": len(group)}
        row.update({key: sum(r[key] for r in group) / len(group) for key in numbers})
        row["identity_min"] = min(r["identity"] for r in group)
        row["identity_max"] = max(r["identity"] for r in group)
        summary.append(row)
    return summary


def execute(
    runs: list[Run], unet, evaluator, encoder, samples: int, epochs: int | None, log: Callable = print
) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """Train and score every run; returns rows (metrics + seconds) and the samples per run."""
    trained: dict[str, tuple] = {}
    rows, grids = [], {}
    for run in runs:
        start = time.perf_counter()
        settings = replace(DEFAULT_TRAIN, **run.settings, **({"epochs": epochs} if epochs else {}))
        data = _data(run.references, encoder)
        train_seconds = 0.0
        if run.method == "base":
            gen = Generator(unet)
        elif run.method == "dreambooth":
            tuned, _ = dreambooth_like(unet, data, settings)
            train_seconds = time.perf_counter() - start
            gen = Generator(tuned)
        else:
            if run.reuse:
                p3s, data = trained[run.reuse]
            else:
                p3s, _ = train_p3s_model(unet, data, settings, run.zero_hint, run.injection_rank, run.hint_region)
                train_seconds = time.perf_counter() - start
                trained[run.name] = (p3s, data)
            gen = Generator(unet, _sampling_p3s(p3s, run), _sample_hint(p3s, data, run, encoder), run.schedule)
        metrics, shots = score(gen, evaluator, encoder, samples)
        row = {
            "run": run.name,
            "group": run.group,
            **metrics,
            "train_s": train_seconds,
            "total_s": time.perf_counter() - start,
        }
        rows.append(row)
        log("ROW " + json.dumps(row))
        grids[run.name] = shots
        log(
            f"{run.name}: identity {metrics['identity']:.3f} gap {metrics['identity_gap']:+.4f} "
            f"green {metrics['edit_green']:.2f} distractor {metrics['distractor_seen']:.2f} "
            f"({row['total_s']:.0f} s)"
        )
    return rows, grids


def _data(kind: str, encoder):
    scenes = reference_scenes(seed=3, with_distractor=kind != "clean")
    selected = selected_references(scenes) if kind == "distractor_points" else None
    return training_data(scenes, encoder, remove_distractor=kind == "distractor_removed", selected=selected)


def _sampling_p3s(p3s, run: Run):
    if run.sample_hint != "zero_injection":
        return p3s
    import copy

    zeroed = copy.deepcopy(p3s)
    with torch.no_grad():
        for param in zeroed.injection.parameters():
            param.zero_()
    return zeroed


def _sample_hint(p3s, data, run: Run, encoder) -> torch.Tensor:
    """The hint at sampling: the references' (as P3S Apply computes it), zeros, or another subject's."""
    if run.sample_hint == "zero":
        return torch.zeros_like(data.latents)
    if run.sample_hint == "other_subject":
        gen = torch.Generator().manual_seed(4)
        scenes = [world.Scene(s.background, (world.jittered(OTHER_SUBJECT, gen),)) for s in reference_scenes(3, False)]
        lat = world.latents(scenes)
        masks = torch.stack([world.object_mask(s) for s in scenes])
        with torch.no_grad():
            return p3s.encoder(clip_standin_tokens(lat), masks, lat, masks)
    with torch.no_grad():
        return p3s.encoder(data.tokens, data.mask_grids, data.latents, data.latent_masks)
