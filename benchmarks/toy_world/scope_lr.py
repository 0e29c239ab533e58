"""Learning rate per scope: where each training scope reaches its best identity, relative to ``full``.

``python -m benchmarks.toy_world.scope_lr --json [--pairs a,b] [--seeds N] [--scopes ...] [--lrs ...]``
trains P3S on each pair's clean references for every scope x learning rate x training seed
(the hint path at ``lr x hint_lr_scale``, as P3S Fine-tune does), scores identity, and runs
P3S Fine-tune's learning check (:mod:`p3s_core.training.learning_check`: the references'
denoising loss after training, as a share below the base's). It also trains a no-op run per
pair and seed (``--noop-lr``, default 1e-9) whose loss must stay at the base's.

It prints one JSON object: ``scopes`` (per scope and lr: mean identity over pairs and seeds,
its range, mean ``below_base``), ``best_lr`` (per scope, the lr of its highest mean identity),
``knee_lr`` (the lowest lr whose mean identity is within ``--knee`` of that best), their ratios
to ``full``'s (``best_ratio``, ``knee_ratio``), ``noop`` (the no-op runs' ``below_base``) and
``rows`` (every run). The toy U-Net's learning rates are not SD1.5's; the ratios are what
docs/method.md carries over. ``--quick`` is the CI version (quick base, one pair, one seed,
two scopes, two rates, short training, few samples).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from p3s_core.training.learning_check import LearningCheck, subject_losses

from .bench_setup import load_bench, log
from .host import training_sigmas
from .lookalikes import PAIRS, Pair, clean_data
from .methods import train_p3s_model
from .metrics import Generator, score
from .runs import DEFAULT_TRAIN

SCOPES = ("full", "attention", "lora", "injection")
LRS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3)
QUICK = {"scopes": ("full", "injection"), "lrs": (1e-4, 1e-3), "epochs": 10, "samples": 8}
DEFAULT_PAIRS = ("yellow_diamond", "white_square")
KNEE = 0.05


def run_one(pair: Pair, scope: str, lr: float, seed: int, unet, evaluator, encoder, epochs, samples: int) -> dict:
    """One training: identity of its samples and the learning check's figures."""
    start = time.perf_counter()
    settings = replace(DEFAULT_TRAIN, seed=seed, lr=lr, scope=scope, **({"epochs": epochs} if epochs else {}))
    data = clean_data(pair, encoder)
    p3s, _ = train_p3s_model(unet, data, settings)
    sigmas = training_sigmas()
    check = LearningCheck(
        base=subject_losses(None, unet, sigmas, data),
        before=float("nan"),
        after=subject_losses(p3s, unet, sigmas, data),
    )
    with torch.no_grad():
        hint = p3s.encoder(data.tokens, data.mask_grids, data.latents, data.latent_masks)
    metrics = score(
        Generator(unet, p3s, hint), evaluator, encoder, samples, subject=pair.subject, lookalike=pair.lookalike
    )[0]
    del p3s
    return {
        "pair": pair.name,
        "scope": scope,
        "lr": lr,
        "seed": seed,
        "identity": metrics["identity"],
        "base_loss": check.base,
        "after_loss": check.after,
        "below_base": check.below_base,
        "seconds": time.perf_counter() - start,
    }


def summarise(rows: list[dict], scopes, lrs, knee: float) -> dict:
    """Means per scope and lr, each scope's best and knee lr, their ratios to full's."""
    table: dict[str, dict[str, dict]] = {}
    for scope in scopes:
        table[scope] = {}
        for lr in lrs:
            group = [r for r in rows if r["scope"] == scope and r["lr"] == lr]
            if not group:
                continue
            ids = [r["identity"] for r in group]
            table[scope][f"{lr:g}"] = {
                "identity": sum(ids) / len(ids),
                "identity_range": [min(ids), max(ids)],
                "below_base": sum(r["below_base"] for r in group) / len(group),
                "runs": len(group),
            }
    best, knees = {}, {}
    for scope, by_lr in table.items():
        if not by_lr:
            continue
        top = max(v["identity"] for v in by_lr.values())
        best[scope] = float(max(by_lr, key=lambda k: by_lr[k]["identity"]))
        knees[scope] = min(float(k) for k, v in by_lr.items() if v["identity"] >= top - knee)
    full_best, full_knee = best.get("full"), knees.get("full")
    return {
        "scopes": table,
        "best_lr": best,
        "knee_lr": knees,
        "best_ratio": {s: v / full_best for s, v in best.items()} if full_best else None,
        "knee_ratio": {s: v / full_knee for s, v in knees.items()} if full_knee else None,
    }


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def main(argv: list[str] | None = None) -> dict:
    """Run the sweep (see the module docstring); returns the printed result."""
    from .host import autograd_safe_attention

    with autograd_safe_attention():
        return _main(argv)


def _main(argv: list[str] | None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.toy_world.scope_lr", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument("--quick", action="store_true", help="the CI version")
    parser.add_argument("--pairs", default=None, help=f"comma-separated pairs (default {','.join(DEFAULT_PAIRS)})")
    parser.add_argument("--seeds", type=int, default=None, help="training seeds 0..N-1 (default 2, quick 1)")
    parser.add_argument("--scopes", default=None, help=f"comma-separated scopes (default {','.join(SCOPES)})")
    parser.add_argument("--lrs", default=None, help="comma-separated learning rates")
    parser.add_argument("--noop-lr", type=float, default=1e-9, help="the no-op run's lr (0 = no no-op run)")
    parser.add_argument("--knee", type=float, default=KNEE, help="knee: within this of a scope's best identity")
    parser.add_argument("--samples", type=int, default=None, help="samples per prompt (default 16)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default 60)")
    args = parser.parse_args(argv)
    names = args.pairs.split(",") if args.pairs else list(DEFAULT_PAIRS[:1] if args.quick else DEFAULT_PAIRS)
    unknown = [n for n in names if n not in PAIRS]
    if unknown:
        parser.error(f"Unknown pair(s) {', '.join(unknown)}; the pairs are: {', '.join(PAIRS)}.")
    scopes = tuple(args.scopes.split(",")) if args.scopes else (QUICK["scopes"] if args.quick else SCOPES)
    if bad := [s for s in scopes if s not in SCOPES]:
        parser.error(f"Unknown scope(s) {', '.join(bad)}; the scopes are: {', '.join(SCOPES)}.")
    lrs = _floats(args.lrs) if args.lrs else (QUICK["lrs"] if args.quick else LRS)
    seeds = args.seeds or (1 if args.quick else 2)
    epochs = args.epochs or (QUICK["epochs"] if args.quick else None)
    samples = args.samples or (QUICK["samples"] if args.quick else 16)

    bench = load_bench(args.quick)
    unet, base_info, encoder, evaluator = bench.unet, bench.base_info, bench.encoder, bench.evaluator
    rows, noop = [], []
    for name in names:
        pair = PAIRS[name]
        for seed in range(seeds):
            if args.noop_lr > 0:
                row = run_one(pair, scopes[-1], args.noop_lr, seed, unet, evaluator, encoder, epochs, samples)
                noop.append(row)
                log("NOOP " + json.dumps(row))
            for scope in scopes:
                for lr in lrs:
                    rows.append(run_one(pair, scope, lr, seed, unet, evaluator, encoder, epochs, samples))
                    log("ROW " + json.dumps(rows[-1]))
    result = {
        **summarise(rows, scopes, lrs, args.knee),
        "noop": {
            "lr": args.noop_lr,
            "scope": scopes[-1],
            "below_base": [r["below_base"] for r in noop],
            "identity": [r["identity"] for r in noop],
        },
        "pairs": names,
        "seeds": seeds,
        "epochs": epochs or DEFAULT_TRAIN.epochs,
        "samples": samples,
        "quick": args.quick,
        "rows": rows,
        "base": base_info,
    }
    print(json.dumps(result) if args.json else json.dumps({k: v for k, v in result.items() if k != "rows"}))
    return result


if __name__ == "__main__":
    main()
