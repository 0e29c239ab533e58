"""Training checkpoints of a P3S model: numbered files that resume training exactly (our addition).

A checkpoint of epoch k of ``<name>.safetensors`` is ``<name>_e<kkkk>.safetensors`` beside it:
a format-2 P3S model file (so P3S Loader and P3S Apply read it like any model) whose tensors
are stored in float32, plus the AdamW state as ``optimizer.*`` tensors and ``p3s.resume`` =
``{"epoch": k}`` (with ``"grad_scaler": {"scale", "growth_tracker"}`` for an fp16 run). With
the per-epoch random streams of :mod:`.step`, P3S Fine-tune given a checkpoint and the same
settings continues exactly where the uninterrupted run would be.
Files are written atomically by :func:`..model.model_file.save_p3s_model` (never a partial file).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import P3SInputError
from ..model.model_file import OPTIMIZER_PREFIX, P3SModelInfo, save_p3s_model, split_optimizer_state
from ..model.p3s_model import P3SModel
from .settings import ResumeState


def checkpoint_path(target: Path, epoch: int) -> Path:
    """``<stem>_e<epoch:04d><suffix>`` beside ``target``."""
    return target.with_name(f"{target.stem}_e{epoch:04d}{target.suffix}")


def checkpoint_epochs(epochs: int, save_every: int, start_epoch: int = 0) -> list[int]:
    """Epochs after which a checkpoint is written: every ``save_every``-th, not the last (the final file)."""
    if save_every <= 0:
        return []
    return [e for e in range(save_every, epochs, save_every) if e > start_epoch]


def save_checkpoint(
    path: Path, p3s: P3SModel, state: ResumeState, training: Mapping | None, overwrite: bool = False
) -> None:
    """Write ``p3s`` with its optimiser state as a checkpoint (float32, atomically)."""
    tensors = dict(p3s.state_dict())
    tensors.update({OPTIMIZER_PREFIX + key: value for key, value in state.optimizer.items()})
    resume = {"epoch": state.epoch}
    if state.scaler is not None:
        resume["grad_scaler"] = dict(state.scaler)
    save_p3s_model(path, tensors, p3s.config, training, dtype="fp32", base=p3s.base, overwrite=overwrite, resume=resume)


def resume_state_of(tensors: Mapping[str, torch.Tensor], info: P3SModelInfo) -> tuple[dict, ResumeState]:
    """``(model tensors, resume state)`` of a loaded file: a checkpoint resumes exactly, a final model
    extends with a fresh optimiser after the epochs it was trained for."""
    model_tensors, optimizer = split_optimizer_state(tensors)
    if info.resume is not None:
        try:
            epoch = int(info.resume["epoch"])
            scaler = info.resume.get("grad_scaler")
            if scaler is not None:
                scaler = {"scale": float(scaler["scale"]), "growth_tracker": int(scaler["growth_tracker"])}
        except (KeyError, TypeError, ValueError, AttributeError):
            raise P3SInputError("This checkpoint's p3s.resume metadata is broken: use another checkpoint.") from None
        return model_tensors, ResumeState(epoch, optimizer, scaler)
    return model_tensors, ResumeState(int((info.training or {}).get("epochs", 0)), {})
