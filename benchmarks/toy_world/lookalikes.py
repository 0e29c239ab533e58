"""Pick one among look-alikes: each subject learned from clean references and from cluttered ones.

``python -m benchmarks.toy_world.lookalikes --json [--seeds N] [--pairs a,b]`` runs, for every
subject/look-alike pair and training seed, P3S on clean references (the subject alone), P3S on
references with the look-alike beside the subject through the points path (P3S Points -> RNGR
Mask -> P3S Inpaint, then subject framing unless ``--no-framing``), and the DreamBooth-like
baseline on those same references. It prints one JSON object: ``pairs`` (per pair the means over
seeds of ``clean_identity``, ``points_identity``, ``dreambooth_points_identity``,
``zero_hint_drop`` = clean identity minus the clean model's identity with a zero hint,
``lookalike_read`` = share of the points model's samples read as the look-alike's colour, pattern
and shape together, ``edit_identity`` = the points model's identity under "... on a green
background", beside them the base's own identity, the points model's ``reader_identity`` (its
identity as the model-free reader reads it) and ``reader_agreement`` (share of its samples where
evaluator and reader agree on colour, pattern and shape), the clean model's and the base's
same two figures, and each target of docs/toy_world.md) and ``seeds``. ``--quick`` is the CI
version (the quick base, one pair, one seed, 16 samples). ``--clean-only --frame-clean`` trains
only on the clean references, framed as Fine-tune's ``frame_subject`` frames them (the default's
question: does framing cost anything on photos where the subject is alone?).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace

import torch

from p3s_core.errors import P3SInputError
from p3s_core.model.subject_encoder import mask_to_patch_grid
from p3s_core.selection.framing import DEFAULT_MARGIN, frame_references

from . import world
from .methods import dreambooth_like, train_p3s_model
from .metrics import Generator, score
from .runs import DEFAULT_TRAIN
from .selection import RENDER_SIZE, image_to_latent, reference_images, select
from .subject import reference_scenes, training_data


@dataclass(frozen=True)
class Pair:
    """A subject and its look-alike; ``differs``: what tells them apart."""

    name: str
    subject: world.Thing
    lookalike: world.Thing
    differs: str


def _pair(name: str, subject: tuple[str, str, str], lookalike: tuple[str, str, str], differs: str) -> Pair:
    return Pair(name, world.Thing(*subject), world.Thing(*lookalike), differs)


PAIRS = {
    pair.name: pair
    for pair in (
        _pair("yellow_diamond", ("diamond", "yellow", "striped"), ("diamond", "blue", "striped"), "colour"),
        _pair("white_square", ("square", "white", "plain"), ("square", "red", "plain"), "colour"),
        _pair("red_triangle", ("triangle", "red", "striped"), ("square", "red", "striped"), "shape"),
        _pair("blue_circle", ("circle", "blue", "plain"), ("circle", "blue", "striped"), "pattern"),
    )
}
REFERENCE_SEED = 3
TARGETS = {
    "points_identity": "points_identity >= 0.85 and >= 0.9 x clean_identity",
    "lookalike_read": "lookalike_read <= 0.05",
    "edit_identity": "edit_identity >= 0.8",
    "points_vs_dreambooth": "points_identity - dreambooth_points_identity >= 0.1",
    "zero_hint_drop": "zero_hint_drop >= 0.15",
}
MEANS = (
    "clean_identity",
    "points_identity",
    "dreambooth_points_identity",
    "zero_hint_drop",
    "lookalike_read",
    "edit_identity",
    "clean_edit_identity",
    "points_subject_read",
    "reader_identity",
    "reader_agreement",
    "clean_reader_identity",
    "clean_reader_agreement",
    "reader_lookalike_read",
)


@dataclass(frozen=True)
class Options:
    """How the look-alike references are prepared and trained on."""

    framing_margin: float | None = DEFAULT_MARGIN  # None: no subject framing
    epochs: int | None = None  # None: the table's 60
    samples: int = 32
    background_loss_weight: float = 1.0
    dropout: float | None = None  # None: the table's caption dropout (DEFAULT_TRAIN's)
    points_only: bool = False  # skip the clean references' arms (a second run of another framing)
    clean_only: bool = False  # only the clean references' arms (with frame_clean: framing on clean photos)
    frame_clean: bool = False  # frame the clean references too, at framing_margin


def clean_data(pair: Pair, encoder, framing_margin: float | None = None):
    """Training data of the subject alone on each reference, its exact coverage as the mask; with
    ``framing_margin``, each reference framed around that mask first (as Fine-tune's ``frame_subject``)."""
    scenes = reference_scenes(REFERENCE_SEED, False, pair.subject, pair.lookalike)
    if framing_margin is None:
        return training_data(scenes, encoder, remove_distractor=False)
    images = reference_images(scenes)
    masks = torch.stack([world.object_mask(scene, 0, RENDER_SIZE) for scene in scenes])
    images, masks, _ = frame_references(images, masks, RENDER_SIZE, framing_margin)
    grids = mask_to_patch_grid(masks, world.LATENT_SIZE, pad_to_square=True)
    return training_data(scenes, encoder, remove_distractor=False, selected=(image_to_latent(images), grids))


def points_data(pair: Pair, encoder, framing_margin: float | None):
    """Training data of the look-alike references through the points path (and framing)."""
    scenes = reference_scenes(REFERENCE_SEED, True, pair.subject, pair.lookalike)
    chosen = select(scenes)
    images, masks = chosen.cleaned, chosen.subject_mask
    if framing_margin is not None:
        images, masks, _ = frame_references(images, masks, RENDER_SIZE, framing_margin)
    latents = image_to_latent(images)
    grids = mask_to_patch_grid(masks, world.LATENT_SIZE, pad_to_square=True)
    return training_data(scenes, encoder, remove_distractor=False, selected=(latents, grids))


def _reference_hint(p3s, data) -> torch.Tensor:
    with torch.no_grad():
        return p3s.encoder(data.tokens, data.mask_grids, data.latents, data.latent_masks)


def run_seed(pair: Pair, seed: int, unet, evaluator, encoder, options: Options, log=print) -> dict:
    """Every arm of one pair at one training seed: identities, look-alike reading, edit identity."""
    settings = replace(
        DEFAULT_TRAIN,
        seed=seed,
        background_loss_weight=options.background_loss_weight,
        **({"epochs": options.epochs} if options.epochs else {}),
        **({"dropout": options.dropout} if options.dropout is not None else {}),
    )

    def scored(gen: Generator) -> dict:
        return score(gen, evaluator, encoder, options.samples, subject=pair.subject, lookalike=pair.lookalike)[0]

    start = time.perf_counter()
    row: dict = {"pair": pair.name, "seed": seed, **dict.fromkeys(MEANS), "selection_error": None}
    if not options.points_only:
        clean = clean_data(pair, encoder, options.framing_margin if options.frame_clean else None)
        p3s, _ = train_p3s_model(unet, clean, settings)
        clean_scores = scored(Generator(unet, p3s, _reference_hint(p3s, clean)))
        zero_scores = scored(Generator(unet, p3s, torch.zeros_like(clean.latents)))
        del p3s
        row["clean_identity"] = clean_scores["identity"]
        row["zero_hint_drop"] = clean_scores["identity"] - zero_scores["identity"]
        row["clean_edit_identity"] = clean_scores["edit_identity"]
        row["clean_reader_identity"] = clean_scores["reader_identity"]
        row["clean_reader_agreement"] = clean_scores["reader_agreement"]
    picked = None
    try:
        if not options.clean_only:
            picked = points_data(pair, encoder, options.framing_margin)
    except P3SInputError as error:  # the selection path found no subject: a result, not a crash
        row["selection_error"] = str(error)
    if picked is not None:
        p3s, _ = train_p3s_model(unet, picked, settings)
        points_scores = scored(Generator(unet, p3s, _reference_hint(p3s, picked)))
        del p3s
        tuned, _ = dreambooth_like(unet, picked, settings)
        dreambooth_scores = scored(Generator(tuned))
        del tuned
        row["points_identity"] = points_scores["identity"]
        row["dreambooth_points_identity"] = dreambooth_scores["identity"]
        row["lookalike_read"] = points_scores["lookalike_read"]
        row["edit_identity"] = points_scores["edit_identity"]
        row["points_subject_read"] = points_scores["subject_read"]
        row["reader_identity"] = points_scores["reader_identity"]
        row["reader_agreement"] = points_scores["reader_agreement"]
        row["reader_lookalike_read"] = points_scores["reader_lookalike_read"]
    row["seconds"] = time.perf_counter() - start
    log("SEED " + json.dumps(row))
    return row


def summarise(pair: Pair, rows: list[dict], base_identity: float, base_scores: dict | None = None) -> dict:
    """The means over seeds of one pair, identity's range from the points path, and the targets.

    ``base_scores`` (the base's ``score``): its reader identity and agreement beside its identity.
    """
    out = {"pair": pair.name, "differs": pair.differs, "seeds": len(rows), "base_identity": base_identity}
    if base_scores is not None:
        out["base_reader_identity"] = base_scores["reader_identity"]
        out["base_reader_agreement"] = base_scores["reader_agreement"]
    out.update({key: _mean([r[key] for r in rows]) for key in MEANS})
    points = [r["points_identity"] for r in rows if r["points_identity"] is not None]
    out["points_identity_range"] = [min(points), max(points)] if points else None
    out["selection_errors"] = sum(r["selection_error"] is not None for r in rows)
    out["targets"] = {name: _holds(check, out) for name, check in _CHECKS.items()}
    return out


def _mean(values: list) -> float | None:
    """The mean over the seeds that measured it; None when none did (e.g. the selection failed)."""
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


_CHECKS = {
    "points_identity": lambda o: o["points_identity"] >= 0.85 and o["points_identity"] >= 0.9 * o["clean_identity"],
    "lookalike_read": lambda o: o["lookalike_read"] <= 0.05,
    "edit_identity": lambda o: o["edit_identity"] >= 0.8,
    "points_vs_dreambooth": lambda o: o["points_identity"] - o["dreambooth_points_identity"] >= 0.1,
    "zero_hint_drop": lambda o: o["zero_hint_drop"] >= 0.15,
}


def _holds(check, out: dict) -> bool | None:
    """Whether a target holds; None where a value it needs was not measured."""
    try:
        return bool(check(out))
    except TypeError:
        return None


def _pairs(names: str | None, quick: bool) -> list[Pair]:
    if not names:
        return [PAIRS["yellow_diamond"]] if quick else list(PAIRS.values())
    chosen = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in PAIRS]
    if unknown:
        raise ValueError(f"Unknown pair(s) {', '.join(unknown)}; the pairs are: {', '.join(PAIRS)}.")
    return [PAIRS[name] for name in chosen]


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark (see the module docstring); returns the printed result."""
    from .host import autograd_safe_attention

    with autograd_safe_attention():
        return _main(argv)


def _main(argv: list[str] | None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.toy_world.lookalikes", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument("--seeds", type=int, default=None, help="training seeds 0..N-1 (default 3, quick 1)")
    parser.add_argument("--pairs", default=None, help=f"comma-separated pairs (default all: {', '.join(PAIRS)})")
    parser.add_argument(
        "--quick", action="store_true", help="the CI version: the quick base, one pair, one seed, 16 samples"
    )
    parser.add_argument("--no-framing", action="store_true", help="train on the look-alike references uncropped")
    parser.add_argument("--framing-margin", type=float, default=DEFAULT_MARGIN, help="subject framing's margin")
    parser.add_argument("--background-loss-weight", type=float, default=1.0, help="L_LDM weight outside the subject")
    parser.add_argument(
        "--dropout", type=float, default=None, help="caption dropout in training (default the table's 0.1)"
    )
    parser.add_argument("--points-only", action="store_true", help="only the look-alike references' arms")
    parser.add_argument("--clean-only", action="store_true", help="only the clean references' arms")
    parser.add_argument("--frame-clean", action="store_true", help="frame the clean references too (framing margin)")
    parser.add_argument("--samples", type=int, default=None, help="samples per prompt (default 32, quick 16)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default 60)")
    args = parser.parse_args(argv)
    try:
        pairs = _pairs(args.pairs, args.quick)
    except ValueError as error:
        parser.error(str(error))
    seeds = args.seeds or (1 if args.quick else 3)
    if seeds < 1:
        parser.error("--seeds must be at least 1")
    options = Options(
        framing_margin=None if args.no_framing else args.framing_margin,
        epochs=args.epochs,
        samples=args.samples or (16 if args.quick else 32),
        background_loss_weight=args.background_loss_weight,
        dropout=args.dropout,
        points_only=args.points_only,
        clean_only=args.clean_only,
        frame_clean=args.frame_clean,
    )
    if args.points_only and args.clean_only:
        parser.error("--points-only and --clean-only leave nothing to run: give one of them")

    from . import base
    from .evaluator import train_evaluator
    from .text import WordEncoder

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    encoder = WordEncoder()
    unet, base_info = base.load_or_pretrain(
        base.QUICK_PRETRAIN if args.quick else base.PretrainSettings(), encoder, log
    )
    evaluator, evaluator_report = train_evaluator()
    log("EVALUATOR " + json.dumps(vars(evaluator_report)))
    summaries, seed_rows = [], []
    for pair in pairs:
        base_scores = score(
            Generator(unet), evaluator, encoder, options.samples, subject=pair.subject, lookalike=pair.lookalike
        )[0]
        rows = [run_seed(pair, seed, unet, evaluator, encoder, options, log) for seed in range(seeds)]
        seed_rows += rows
        summaries.append(summarise(pair, rows, base_scores["identity"], base_scores))
        log("PAIR " + json.dumps(summaries[-1]))
    result = {
        "pairs": summaries,
        "seeds": seeds,
        "quick": args.quick,
        "framing_margin": options.framing_margin,
        "frame_clean": options.frame_clean,
        "background_loss_weight": options.background_loss_weight,
        "dropout": options.dropout if options.dropout is not None else DEFAULT_TRAIN.dropout,
        "epochs": options.epochs or DEFAULT_TRAIN.epochs,
        "samples": options.samples,
        "targets": TARGETS,
        "seed_rows": seed_rows,
        "base": base_info,
        "evaluator": vars(evaluator_report),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for row in summaries:
            print(json.dumps(row))
    return result


if __name__ == "__main__":
    main()
