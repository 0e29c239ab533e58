"""``python -m benchmarks.toy_world [--quick] [--json] [--out DIR] [--runs A,B]``: the toy-world table.

Stages, each timed: the base (pretrained once and cached, see ``base.py``), the evaluator, the
caption check of the base, then every run (train, sample, score). Writes ``table.md`` and
``samples.png`` under ``--out`` (default: ``<cache>/results[-quick]``, or ``results-subset``
with ``--runs``); ``--json`` prints everything as one JSON object on stdout. ``--runs`` trains
and scores only the named runs, in the order given (plus any run whose trained model one of
them reuses, before it). ``--seeds N`` trains every run with training seeds 0..N-1 and
reports each metric's mean over them, with identity's range (``seeds.md``, ``seed_rows``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .host import autograd_safe_attention


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark (see the module docstring); returns the printed result."""
    with autograd_safe_attention():
        return _main(argv)


def _main(argv: list[str] | None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.toy_world", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the CI version: a shorter base and three runs")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--out", type=Path, default=None, help="folder for table.md and samples.png")
    parser.add_argument("--samples", type=int, default=None, help="samples per prompt (default 32, quick 16)")
    parser.add_argument("--runs", default=None, help="comma-separated run names: only these (default: all)")
    parser.add_argument("--seeds", type=int, default=1, help="training seeds per run (mean and range over them)")
    args = parser.parse_args(argv)

    from . import base, runs
    from .evaluator import train_evaluator
    from .metrics import caption_check
    from .report import markdown_table, sample_grid
    from .text import WordEncoder

    selected = runs.all_runs(args.quick)
    if args.runs:
        try:
            selected = runs.select_runs(selected, [name.strip() for name in args.runs.split(",") if name.strip()])
        except ValueError as error:
            parser.error(str(error))

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    stages: dict[str, float] = {}
    encoder = WordEncoder()
    start = time.perf_counter()
    settings = base.QUICK_PRETRAIN if args.quick else base.PretrainSettings()
    unet, base_info = base.load_or_pretrain(settings, encoder, log)
    stages["base"] = time.perf_counter() - start

    start = time.perf_counter()
    evaluator, evaluator_report = train_evaluator()
    stages["evaluator"] = time.perf_counter() - start

    start = time.perf_counter()
    captions = caption_check(unet, evaluator, encoder, per_prompt=4 if args.quick else 8)
    stages["caption_check"] = time.perf_counter() - start
    log(f"caption check: {captions}")

    start = time.perf_counter()
    samples = args.samples or (16 if args.quick else 32)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    rows, grids = runs.execute(runs.seeded_runs(selected, args.seeds), unet, evaluator, encoder, samples, None, log)
    stages["runs"] = time.perf_counter() - start

    suffix = "-subset" if args.runs else "-quick" if args.quick else ""
    out = args.out or base.cache_dir() / f"results{suffix}"
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows)
    (out / "table.md").write_text(table)
    seed_rows = runs.seed_summary(rows) if args.seeds > 1 else None
    if seed_rows:
        table = markdown_table(seed_rows, ("seeds", "identity_min", "identity_max"))
        (out / "seeds.md").write_text(table)
    sample_grid(grids, out / "samples.png")
    result = {
        "quick": args.quick,
        "base": {**base_info, "settings": settings.__dict__},
        "evaluator_clean_accuracy": evaluator_report.clean_accuracy,
        "caption_check": captions,
        "caption_check_passed": captions["colour"] >= 0.8 and captions["background"] >= 0.8,
        "rows": rows,
        "seed_rows": seed_rows,
        "stage_seconds": stages,
        "table_md": str(out / "table.md"),
        "samples_png": str(out / "samples.png"),
    }
    (out / "results.json").write_text(json.dumps(result, indent=1))
    if args.json:
        print(json.dumps(result))
    else:
        print(table)
    return result


if __name__ == "__main__":
    main()
