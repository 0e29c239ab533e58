"""What every toy-world benchmark starts from: the base (full or quick), its text encoder, the
evaluator and a log on stderr."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch


def log(message: str) -> None:
    """Progress on stderr, so that stdout stays one JSON object."""
    print(message, file=sys.stderr, flush=True)


@dataclass
class ToyBench:
    """The pretrained (or cached) base ``unet`` with its ``base_info``, the ``encoder`` it was trained
    with, and the ``evaluator`` that reads samples."""

    unet: torch.nn.Module
    base_info: dict
    encoder: object
    evaluator: torch.nn.Module
    evaluator_report: object


def load_bench(quick: bool) -> ToyBench:
    """The quick base (CI) or the full one, loaded from the cache or pretrained, and a fresh evaluator."""
    from . import base
    from .evaluator import train_evaluator
    from .text import WordEncoder

    encoder = WordEncoder()
    unet, base_info = base.load_or_pretrain(base.QUICK_PRETRAIN if quick else base.PretrainSettings(), encoder, log)
    evaluator, report = train_evaluator()
    return ToyBench(unet, base_info, encoder, evaluator, report)
