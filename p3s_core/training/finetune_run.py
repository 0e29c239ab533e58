"""The steps of a P3S Fine-tune run around :func:`.loop.train_p3s` (our addition).

* the scope to train: :func:`check_scope_choice` (before any work), :func:`pick_scope`
  (``auto``: the richest that fits the free memory the caller measured, :mod:`.scope_memory`)
  or, continuing a model, :func:`continued_scope`;
* resuming: :func:`continued_model` (a float32 copy of a file, checkpoint or model in memory,
  with where its training stopped) and :func:`start_epoch` (refuses a model already trained
  for the epochs asked);
* out of memory: :func:`out_of_memory_advice` (what to change, with ``auto``'s estimate);
* what the run saves: :func:`save_target` (the final file's name), :func:`training_record`
  (the settings kept in the file) and :func:`save_plan` (checkpoints per epoch, refused when
  they exist; the final file under the next free name, written right after training).

Where the frozen U-Net and the copy attend after training is shown by
:func:`..inspection.reference_overlays.reference_overlays`.

The ComfyUI MODEL is read duck-typed (``model.model.diffusion_model``, ``model_size()``,
``loaded_size()``, ``load_device``); rebuilding a saved model on it is the caller's function
(the node's ``p3s_model_from_file`` checks the base and places the model through ComfyUI).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..bases.registry import base_for_model
from ..errors import P3SInputError
from ..model.injection_layers import DEFAULT_INJECTION_RANK
from ..model.model_file import P3SModelFile, next_free_path, resolve_model_path, save_p3s_model
from ..model.p3s_model import P3SModel
from ..model.shared_copy import SCOPES
from .checkpoints import checkpoint_epochs, checkpoint_path, resume_state_of, save_checkpoint
from .scope_memory import auto_scope, p3s_layer_parameters
from .scope_memory import scope_needs as memory_of_scopes
from .settings import ResumeState, TrainHistory, TrainingData, TrainSettings

DEFAULT_KEEP_CHECKPOINTS = 3
SCOPE_CHOICES = ("auto", *SCOPES)  # auto: the richest scope that fits, see pick_scope
EPOCHS_DONE = "p3s_epochs_done"  # kept on a trained model's __dict__: where a further Fine-tune resumes

Rebuild = Callable[[dict, dict], P3SModel]
"""``rebuild(tensors, config)``: a saved P3S model on the base, float32, on the offload device."""


def scope_needs(
    model,
    data: TrainingData,
    settings: TrainSettings,
    encoder: dict,
    lora_rank: int,
    injection_rank: int = DEFAULT_INJECTION_RANK,
) -> dict[str, int]:
    """Estimated training memory (bytes) of each scope on ``model``'s device (:mod:`.scope_memory`)."""
    unet = model.model.diffusion_model
    return memory_of_scopes(
        unet,
        p3s_layer_parameters(unet, encoder, injection_rank),
        lora_rank,
        int(data.latents.shape[-1] * data.latents.shape[-2]),
        settings.batch_size,
        settings.precision != "fp32" and getattr(model.load_device, "type", "") == "cuda",
        settings.gradient_checkpointing,
        max(int(model.model_size()) - int(model.loaded_size()), 0),
        base_for_model(model),
    )


def check_scope_choice(scope: str) -> None:
    """Refuse a ``scope`` input that is not one of :data:`SCOPE_CHOICES`."""
    if scope not in SCOPE_CHOICES:
        raise P3SInputError(f"scope must be one of {SCOPE_CHOICES}, not {scope!r}.")


def pick_scope(scope: str, free_bytes: int | None, model, *needs_args) -> tuple[str, str]:
    """The scope to build, and a line saying why (``auto``: the richest that fits ``free_bytes``).

    ``free_bytes``: the free memory of ``model.load_device``, read only for ``auto``.
    ``needs_args``: the rest of :func:`scope_needs`' arguments after ``model``.
    """
    if scope != "auto":
        return scope, f"scope {scope}"
    if free_bytes is None:
        raise ValueError("scope auto needs the free memory of the model's device.")
    return auto_scope(int(free_bytes), scope_needs(model, *needs_args), model.load_device)


def continued_model(given, rebuild: Rebuild) -> tuple[P3SModel, ResumeState]:
    """A new P3S model (float32, by ``rebuild``) with ``given``'s weights, and where its training stopped.

    ``given``: a loaded file (a checkpoint resumes exactly) or a P3S model in memory, which is
    never trained in place (it may be another node's cached output).
    """
    if isinstance(given, P3SModelFile):
        tensors, resume = resume_state_of(given.tensors, given.info)
        return rebuild(tensors, given.info.config), resume
    if not isinstance(given, P3SModel):
        raise P3SInputError(f"p3s_model must come from P3S Init, Loader or Fine-tune, not {type(given).__name__}.")
    with torch.inference_mode(False):
        state = {k: v.detach().to("cpu", copy=True) for k, v in given.state_dict().items()}
    return rebuild(state, given.config), ResumeState(int(given.__dict__.get(EPOCHS_DONE, 0)), {})


def continued_scope(settings: TrainSettings, scope: str, model_scope: str) -> tuple[TrainSettings, str]:
    """Settings that train ``scope`` of a continued model of ``model_scope``, and the line saying so.

    ``auto`` (or the model's own scope) keeps the model's scope.
    """
    if scope in ("auto", model_scope):
        return settings, f"scope {model_scope} (of the input model)"
    changed = TrainSettings(**{**settings.as_dict(), "scope": scope})
    return changed, f"scope {scope} of the input model's {model_scope} copy"


def start_epoch(resume: ResumeState | None, epochs: int) -> int:
    """The epoch training starts after; refuses a model already trained for ``epochs`` or more."""
    start = resume.epoch if resume is not None else 0
    if start >= epochs:
        raise P3SInputError(
            f"The input P3S model has already been trained for {start} epochs: set epochs above "
            f"{start} to train it further (epochs counts the whole training)."
        )
    return start


def training_record(
    settings: TrainSettings, scope: str, requested: str, prompts: Sequence[str], images: int, resumed_from: int
) -> dict:
    """The training record a run saves: its settings, the scope trained and asked for, prompts, images."""
    return {
        **settings.as_dict(),
        "scope": scope,
        "scope_requested": requested,
        "prompts": list(prompts),
        "images": int(images),
        "resumed_from_epoch": resumed_from,
    }


def check_checkpoint_name(target: Path | None, save_every: int) -> None:
    """Checkpoints are named after the final file: refuse ``save_every`` without one."""
    if target is None and save_every:
        raise P3SInputError("Checkpoints (save_every) need a save_name: give one, or set save_every to 0.")


def save_target(folders: Iterable[str | os.PathLike], save_name: str, save_every: int, overwrite: bool) -> Path | None:
    """The file a run saves to in ``folders`` (the P3S model folders); None for an empty ``save_name``.

    Not overwriting, a taken name becomes the next free one (``subject_00002.safetensors``).
    Refuses checkpoints (``save_every``) without a name.
    """
    if not save_name.strip():
        check_checkpoint_name(None, save_every)
        return None
    target = resolve_model_path(folders, save_name, must_exist=False, input_name="save_name")
    return target if overwrite else next_free_path(target)


@dataclass(frozen=True)
class SavePlan:
    """What a run writes: a checkpoint after each epoch of ``checkpoints``, then ``target`` (None: nothing).

    ``keep``: how many of this run's checkpoints stay on disk, the newest (0 = all); an older one
    is deleted only after a newer one is written, and the final file is never deleted.
    """

    target: Path | None
    record: Mapping = field(repr=False)
    checkpoints: Mapping[int, Path] = field(default_factory=dict)
    overwrite: bool = False
    keep: int = DEFAULT_KEEP_CHECKPOINTS
    written: list[Path] = field(default_factory=list, repr=False)

    def save_checkpoint(
        self, epoch: int, p3s: P3SModel, history: TrainHistory, state: Callable[[], ResumeState]
    ) -> None:
        """The checkpoint of ``epoch`` where one is planned (``state()`` is built only then)."""
        path = self.checkpoints.get(epoch)
        if path is None:
            return
        last = history.total[-1] if history.total else None
        done = {**self.record, "epochs": epoch, "final_loss": last}
        save_checkpoint(path, p3s, state(), done, overwrite=self.overwrite)
        self.written.append(path)
        while self.keep > 0 and len(self.written) > self.keep:
            self.written.pop(0).unlink(missing_ok=True)

    def save_final(self, p3s: P3SModel, history: TrainHistory) -> Path | None:
        """Write the trained model; the path written (the next free name when the target appeared meanwhile)."""
        if self.target is None:
            return None
        target = self.target if self.overwrite else next_free_path(self.target)  # taken while training ran
        record = {**self.record, "final_loss": history.total[-1]}
        save_p3s_model(target, p3s.state_dict(), p3s.config, record, base=p3s.base, overwrite=self.overwrite)
        return target


def save_plan(
    target: Path | None,
    epochs: int,
    save_every: int,
    start: int,
    overwrite: bool,
    record: Mapping,
    keep: int = DEFAULT_KEEP_CHECKPOINTS,
) -> SavePlan:
    """The :class:`SavePlan` of a run of ``epochs`` from epoch ``start``, keeping the newest ``keep``
    checkpoints (0 = all); refuses existing checkpoint files unless ``overwrite``."""
    check_checkpoint_name(target, save_every)
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
        raise P3SInputError(f"keep_checkpoints is {keep!r}: give a whole number >= 0 (0 keeps every checkpoint).")
    checkpoints = {}
    if target is not None:
        checkpoints = {e: checkpoint_path(target, e) for e in checkpoint_epochs(epochs, save_every, start)}
    taken = [str(path) for path in checkpoints.values() if path.exists()]
    if taken and not overwrite:
        raise P3SInputError(f"Checkpoint files already exist ({', '.join(taken)}): enable overwrite or rename.")
    return SavePlan(target, dict(record), checkpoints, bool(overwrite), keep)


def out_of_memory_advice(
    settings: TrainSettings,
    scope: str,
    resolution: int,
    step: int,
    total: int,
    estimate: str | None = None,
    checkpoints: Sequence[Path] = (),
) -> str:
    """What a Fine-tune that ran out of device memory at ``step`` of ``total`` says to do (our addition).

    ``estimate``: the line of scope ``auto``'s estimate (None for a scope asked by name);
    ``checkpoints``: those this run wrote, which are kept.
    """
    ways = []
    if not settings.gradient_checkpointing:
        ways.append("turn gradient_checkpointing on (a third to two thirds less memory, steps ~1.4x slower)")
    lighter = SCOPES[SCOPES.index(scope) + 1 :] if scope in SCOPES else ()
    if lighter:
        ways.append(f"choose a lighter scope ({', '.join(lighter)})")
    if resolution > 256:
        ways.append(f"lower the resolution (now {resolution} px; activations grow with the pixel count)")
    if settings.batch_size > 1:
        ways.append(f"lower batch_size (now {settings.batch_size})")
    ways.append("close other programs that use the GPU")
    kept = f" Checkpoints kept: {', '.join(p.name for p in checkpoints)}." if checkpoints else ""
    said = f" Estimate before training: {estimate}." if estimate else ""
    return (
        f"P3S Fine-tune ran out of memory at step {step} of {total} (scope {scope}, {resolution} px, batch_size "
        f"{settings.batch_size}, gradient_checkpointing {'on' if settings.gradient_checkpointing else 'off'}); "
        f"the training was stopped and its memory freed.{said}{kept} To fit: {'; '.join(ways)}."
    )
