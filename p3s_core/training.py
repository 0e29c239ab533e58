"""Fine-tuning a P3S model on 3-5 reference images: ``L = L_LDM + gamma * L_ac`` [stated].

[stated] AdamW, lr 1e-5, 60 epochs over the reference images, gamma 0.1, 10% condition
dropout (the text context replaced by the empty prompt's, for classifier-free guidance).
Frozen: CLIP, VAE and the base U-Net. Trained: the U-Net copy, the zero layers, the subject
encoder. Timesteps are drawn uniformly from 0..999 and noised as in SD training
(``x_t = (x_0 + sigma_t eps) / sqrt(sigma_t^2 + 1)``, eps-prediction).

[reconstructed] The copy's injections enter with weight 1 (the sampling schedule is not used
in training). Training trains everything the P3S model owns; its scope (see
:mod:`.shared_copy`) says what that is: ``full`` [stated] the whole copy; ``attention`` the
copy's attention layers; ``lora`` (our addition) low-rank adapters over the shared layers;
``injection`` none of the copy (it is the base U-Net's own modules). The zero layers, hint
ZeroConv and encoder train in every scope. A ``full`` model can also be trained with scope
``attention`` or ``injection``, which then trains only that part of its whole copy.

Resume (our addition): the randomness of epoch ``e`` (image order, noise, timesteps, dropout)
comes from a generator seeded with ``(seed, e)`` alone, so training can stop after any epoch
and go on later; :class:`ResumeState` carries the epochs done and the AdamW state, which is
what a checkpoint stores. Resuming from a checkpoint of epoch k with the same settings gives
the same weights as an uninterrupted run.

Options measured in the toy world (docs/toy_world.md) [our additions]:

* ``hint_source``: ``own`` (default) gives each training row its own image's hint; ``other``
  the hint of another reference image. With the encoder's ``hint_region`` ``subject`` the own
  hint shows the row's subject and nothing of its background, so the reference path has
  something to carry; with ``image`` it would also show the very background being denoised.
* ``hint_lr_scale``: the subject encoder and hint ZeroConv learn at ``lr * hint_lr_scale``
  (default 100; 1 = one learning rate, the paper). At one learning rate the zero-initialised
  hint path barely moves in a 240-step fine-tune, and the references' hint changes nothing.
* ``injection_lr``: a learning rate for the zero injection layers apart from the copy's (None =
  ``lr``).
* ``low_rank_lr_scale``: low-rank injection layers learn at that rate times this (default 3,
  :data:`.injection_layers.LOW_RANK_LR_SCALE`; 1 = the same as full layers).
* ``lac_layers``: ``last`` (output block 11, [stated]) or ``all`` 16 cross-attention layers.

Only trained parameters are float32 (master weights); the forward runs in the base's compute
dtype, or under autocast for an fp32 base on CUDA (``p3s_core/precision.py``). Gradients are
freed right after each optimiser step; gradient checkpointing wraps the layers of both U-Nets
(``p3s_core/checkpointing.py``). Nothing here imports ComfyUI.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .checkpointing import checkpointed
from .errors import P3SInputError
from .injection import injection_deltas, make_attention_probe, make_injection_patch, run_copy
from .injection_layers import LOW_RANK_LR_SCALE, low_rank_parameters
from .losses import NORMALISATIONS, attention_consistency_loss, ldm_loss
from .p3s_model import P3SModel
from .precision import (
    ATTENTION_OVERRIDE_KEY,
    TrainingPrecision,
    attention_override,
    casting_weights,
    make_optimizer,
    training_precision,
)
from .shared_copy import SCOPES
from .unet_layout import ATTENTIONS, LAST_CROSS_ATTENTION
from .validation import in_range

HINT_SOURCES = ("other", "own")
DEFAULT_HINT_LR_SCALE = 100.0
LAC_LAYERS = ("last", "all")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
NUM_TIMESTEPS = 1000
_STATE_KEY = "p3s_training"


@dataclass(frozen=True)
class TrainSettings:
    """Training settings; defaults follow the paper where it states them."""

    epochs: int = 60
    lr: float = 1e-5
    gamma: float = 0.1
    dropout: float = 0.1
    batch_size: int = 1
    seed: int = 0
    precision: str = "auto"
    scope: str | None = None
    lac_normalisation: str = "mean"
    gradient_checkpointing: bool = False
    hint_source: str = "own"
    injection_lr: float | None = None
    hint_lr_scale: float = DEFAULT_HINT_LR_SCALE
    lac_layers: str = "last"
    low_rank_lr_scale: float = LOW_RANK_LR_SCALE

    def __post_init__(self) -> None:
        if self.scope is not None and self.scope not in SCOPES:
            raise P3SInputError(f"Training scope must be one of {SCOPES}, not {self.scope!r}.")
        if self.precision not in PRECISIONS:
            raise P3SInputError(f"Precision must be one of {PRECISIONS}, not {self.precision!r}.")
        if self.lac_normalisation not in NORMALISATIONS:
            raise P3SInputError(f"L_ac normalisation must be one of {NORMALISATIONS}.")
        if self.hint_source not in HINT_SOURCES:
            raise P3SInputError(f"hint_source must be one of {HINT_SOURCES}, not {self.hint_source!r}.")
        if self.lac_layers not in LAC_LAYERS:
            raise P3SInputError(f"lac_layers must be one of {LAC_LAYERS}, not {self.lac_layers!r}.")
        if self.injection_lr is not None and not (self.injection_lr > 0 and math.isfinite(self.injection_lr)):
            raise P3SInputError("injection_lr must be > 0 (or None for the copy's lr).")
        if in_range("hint_lr_scale", self.hint_lr_scale) <= 0:
            raise P3SInputError(f"hint_lr_scale is {self.hint_lr_scale:g}: it must be > 0 (1 = the copy's lr).")
        if in_range("low_rank_lr_scale", self.low_rank_lr_scale) <= 0:
            raise P3SInputError(
                f"low_rank_lr_scale is {self.low_rank_lr_scale:g}: it must be > 0 (1 = the full layers' lr)."
            )
        if self.epochs < 1 or self.batch_size < 1:
            raise P3SInputError("epochs and batch_size must be at least 1.")
        if in_range("lr", self.lr) <= 0:
            raise P3SInputError(f"lr is {self.lr:g}: the learning rate must be > 0 (the paper uses 1e-5).")
        in_range("gamma", self.gamma, 0.0)
        in_range("dropout", self.dropout, 0.0, 1.0)

    def total_steps(self, images: int) -> int:
        """Optimiser steps for ``images`` references: ``epochs x ceil(images / batch_size)``."""
        return self.epochs * self.steps_per_epoch(images)

    def steps_per_epoch(self, images: int) -> int:
        return math.ceil(images / self.batch_size)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainingData:
    """Everything the loop needs per reference image, already computed by the frozen models.

    ``latents`` ``[R, 4, h, w]`` (model latent space), ``tokens`` ``[R, N, D]`` (CLIP vision,
    penultimate layer), ``mask_grids`` ``[R, g, g]`` (subject mask on the patch grid),
    ``contexts`` ``[R, T, C]`` (text per image), ``uncond`` ``[1, T, C]`` (empty prompt),
    ``latent_masks`` ``[R, h, w]`` (subject mask at latent size, for ``hint_region`` ``subject``).
    """

    latents: torch.Tensor
    tokens: torch.Tensor
    mask_grids: torch.Tensor
    contexts: torch.Tensor
    uncond: torch.Tensor
    latent_masks: torch.Tensor | None = None

    def __post_init__(self) -> None:
        r = self.latents.shape[0]
        if any(t.shape[0] != r for t in (self.tokens, self.mask_grids, self.contexts)):
            raise P3SInputError("Latents, CLIP tokens, masks and captions must have one entry per reference image.")
        if self.uncond.shape[1:] != self.contexts.shape[1:]:
            raise P3SInputError("The empty prompt's conditioning must have the captions' token shape.")
        if self.latent_masks is not None and tuple(self.latent_masks.shape) != (r, *self.latents.shape[-2:]):
            raise P3SInputError("The subject masks at latent size must be [images, latent height, latent width].")

    def to(self, device: torch.device | str) -> TrainingData:
        """Normal (non-inference) float32 copies on ``device``."""
        with torch.inference_mode(False):
            moved = {
                k: None if v is None else v.detach().to(device=device, dtype=torch.float32).clone()
                for k, v in asdict(self).items()
            }
        return TrainingData(**moved)


@dataclass
class TrainHistory:
    """Per-step losses (floats): total, L_LDM and L_ac."""

    total: list[float] = field(default_factory=list)
    ldm: list[float] = field(default_factory=list)
    ac: list[float] = field(default_factory=list)


StepCallback = Callable[[int, int, TrainHistory], None]


@dataclass
class ResumeState:
    """Where a training stopped: epochs done and the AdamW state by parameter name.

    ``optimizer`` maps ``<parameter name>.<exp_avg|exp_avg_sq|step>`` to float32 tensors.
    """

    epoch: int
    optimizer: dict[str, torch.Tensor] = field(default_factory=dict)


EpochCallback = Callable[[int, TrainHistory, Callable[[], ResumeState]], None]
"""``on_epoch(epoch, history, state)`` after each epoch; ``state()`` builds the resume state."""

_ADAM_KEYS = ("exp_avg", "exp_avg_sq", "step")
HINT_PATH = ("encoder.", "hint_conv.")  # the subject encoder and the hint ZeroConv


def optimizer_tensors(optimizer: torch.optim.Optimizer, names: dict[int, str]) -> dict[str, torch.Tensor]:
    """The AdamW state as CPU float32 tensors named ``<parameter>.<key>`` (``names``: id(param) -> name)."""
    tensors = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if key in _ADAM_KEYS:
                    value = torch.as_tensor(value)
                    tensors[f"{names[id(param)]}.{key}"] = value.detach().to("cpu", torch.float32, copy=True)
    return tensors


def load_optimizer_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], params: dict[str, nn.Parameter]
) -> None:
    """Put :func:`optimizer_tensors`' state back; a :class:`P3SInputError` when it does not fit."""
    for name, param in params.items():
        state = {key: tensors.get(f"{name}.{key}") for key in _ADAM_KEYS}
        if all(value is None for value in state.values()):
            continue
        if any(value is None for value in state.values()) or state["exp_avg"].shape != param.shape:
            raise P3SInputError(
                f"The checkpoint's optimiser state does not fit parameter {name!r}: resume from a "
                "checkpoint of this model, or train it anew."
            )
        optimizer.state[param] = {
            "step": state["step"].to(torch.float32).clone(),
            "exp_avg": state["exp_avg"].to(param.device, param.dtype).clone(),
            "exp_avg_sq": state["exp_avg_sq"].to(param.device, param.dtype).clone(),
        }


def match_token_lengths(contexts: list[torch.Tensor]) -> list[torch.Tensor]:
    """Repeat text contexts ``[1, T_i, C]`` to one length (their lcm), as ComfyUI does for batches."""
    length = math.lcm(*(c.shape[1] for c in contexts))
    return [c.repeat(1, length // c.shape[1], 1) for c in contexts]


def trainable_parameters(p3s: P3SModel, scope: str | None = None) -> dict[str, nn.Parameter]:
    """The parameters ``scope`` trains (default: the model's own scope, i.e. all it owns), by name."""
    scope = p3s.scope if scope is None else scope
    if scope not in SCOPES:
        raise P3SInputError(f"Training scope must be one of {SCOPES}, not {scope!r}.")
    if scope != p3s.scope and not (p3s.scope == "full" and scope in ("attention", "injection")):
        raise P3SInputError(
            f"This P3S model has scope {p3s.scope!r}; it cannot be trained with scope {scope!r}. Train it with "
            f"its own scope, or start a new model with scope {scope!r}."
        )
    if scope == p3s.scope:
        return dict(p3s.named_parameters())
    chosen = {}
    for name, param in p3s.named_parameters():
        in_scope = scope == "full" or (scope == "attention" and any(f".{a}." in name for a in ATTENTIONS))
        if in_scope or not name.startswith("copy."):
            chosen[name] = param
    return chosen


def unet_compute_dtype(unet: nn.Module) -> torch.dtype:
    """The dtype a U-Net computes in, judged from its weights (fp8 storage computes in bf16)."""
    for param in unet.parameters():
        if param.is_floating_point():
            return param.dtype if param.dtype in (torch.float32, torch.float16, torch.bfloat16) else torch.bfloat16
    return torch.float32


def train_p3s(
    p3s: P3SModel,
    unet: nn.Module,
    sigmas: torch.Tensor,
    data: TrainingData,
    settings: TrainSettings,
    on_step: StepCallback | None = None,
    device: torch.device | str | None = None,
    resume: ResumeState | None = None,
    on_epoch: EpochCallback | None = None,
    compute_dtype: torch.dtype | None = None,
    frozen_context: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> TrainHistory:
    """Fine-tune ``p3s`` in place beside the frozen ``unet``; returns the loss history.

    ``sigmas``: the model's 1000 training sigmas (ComfyUI's ``model_sampling.sigmas``).
    ``on_step(step, total, history)`` runs after each optimiser step (progress bar, Cancel):
    an exception from it, or a NaN/inf loss (:class:`P3SInputError`), stops training, frees
    the optimiser state and propagates. The frozen ``unet`` is never changed. ``resume``
    continues after its epoch (steps are numbered from the start of the whole run; the
    history holds the new steps); ``on_epoch`` runs after each epoch (checkpoints).
    ``compute_dtype``: the dtype the base computes in (default: judged from its weights).
    ``frozen_context``: entered around training by the host, e.g. to swap ops without backward
    for plain ones. Trained parameters are float32 on ``device`` afterwards.
    """
    device = torch.device(device or next(unet.parameters()).device)
    precision = training_precision(settings.precision, device, compute_dtype or unet_compute_dtype(unet))
    history = TrainHistory()
    start_epoch = resume.epoch if resume is not None else 0
    if not 0 <= start_epoch < settings.epochs:
        raise P3SInputError(
            f"This P3S model has already been trained for {start_epoch} epochs: set epochs above {start_epoch} "
            "to train it further."
        )
    with torch.inference_mode(False):
        data = data.to(device)
        sigmas = sigmas.detach().to(device=device, dtype=torch.float32).clone()
        p3s.to(device=device)
        trainable = trainable_parameters(p3s, settings.scope)
        for param in trainable.values():  # fp32 master weights for what is trained only
            if param.dtype != torch.float32:
                param.data = param.data.float()
        names = {id(param): name for name, param in trainable.items()}
        copy_net = p3s.copy_module(unet)  # one shadow for the whole run (checkpointing wraps its blocks)
        optimizer = None
        try:
            with (
                _frozen(unet),
                _only_trainable(p3s, trainable),
                checkpointed([copy_net, unet], settings.gradient_checkpointing),
                casting_weights(p3s),
                frozen_context() if frozen_context is not None else contextlib.nullcontext(),
            ):
                optimizer = make_optimizer(
                    _parameter_groups(trainable, settings, low_rank_parameters(p3s)), settings.lr
                )
                if resume is not None and resume.optimizer:
                    load_optimizer_tensors(optimizer, resume.optimizer, trainable)
                scaler = precision.scaler(device)
                images = data.latents.shape[0]
                total = settings.total_steps(images)
                step = start_epoch * settings.steps_per_epoch(images)
                for epoch in range(start_epoch, settings.epochs):
                    gen = epoch_generator(settings.seed, epoch)
                    hint_gen = epoch_generator(settings.seed + 1, epoch)
                    for rows in torch.randperm(images, generator=gen).split(settings.batch_size):
                        step += 1
                        noise, timesteps, drop = _draw(data.latents[rows].shape, settings.dropout, gen)
                        hint_rows = _hint_rows(rows, images, settings.hint_source, hint_gen)
                        with precision.context(device):
                            losses = step_losses(
                                p3s,
                                unet,
                                sigmas,
                                data,
                                rows,
                                noise,
                                timesteps,
                                drop,
                                settings.lac_normalisation,
                                copy_net=copy_net,
                                precision=precision,
                                hint_rows=hint_rows,
                                lac_layers=settings.lac_layers,
                            )
                        loss = losses[0].float() + settings.gamma * losses[1].float()
                        if not torch.isfinite(loss):
                            raise P3SInputError(
                                f"The training loss became {loss.item()} at step {step}: lower the learning rate "
                                f"(hint path lr = {settings.lr * settings.hint_lr_scale:g}), "
                                "or train in fp32 / bf16 instead of fp16."
                            )
                        if scaler is not None:
                            scaler.scale(loss).backward()
                            scaler.step(optimizer)
                            scaler.update()
                        else:
                            loss.backward()
                            optimizer.step()
                        optimizer.zero_grad(set_to_none=True)  # free the gradients before the next forward
                        history.total.append(float(loss.detach()))
                        history.ldm.append(float(losses[0].detach()))
                        history.ac.append(float(losses[1].detach()))
                        del loss, losses
                        if on_step is not None:
                            on_step(step, total, history)
                    if on_epoch is not None:
                        state = functools.partial(_resume_state, epoch + 1, optimizer, names)
                        on_epoch(epoch + 1, history, state)
        finally:
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
                optimizer.state.clear()
            del optimizer
            for param in p3s.parameters():
                param.grad = None
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return history


def _resume_state(epoch: int, optimizer: torch.optim.Optimizer, names: dict[int, str]) -> ResumeState:
    return ResumeState(epoch, optimizer_tensors(optimizer, names))


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The random stream of one epoch: a function of the seed and the epoch index only."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch)) % 2**63)


def step_losses(
    p3s: P3SModel,
    unet: nn.Module,
    sigmas: torch.Tensor,
    data: TrainingData,
    rows: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    drop: torch.Tensor,
    normalisation: str = "mean",
    maps: dict[str, torch.Tensor] | None = None,
    hint_rows: torch.Tensor | None = None,
    lac_layers: str = "last",
    copy_net: nn.Module | None = None,
    precision: TrainingPrecision | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_LDM, L_ac)`` for one batch (float32); the caller combines them.

    Runs the encoder (hint), the copy (capturing its attention outputs and its output-11
    attention map) and the frozen U-Net with the injections (capturing its map). Pass ``maps``
    to keep those two maps (``"copy"``, ``"frozen"``: ``[B*H, N, T]`` probabilities).
    ``hint_rows``: the references whose hints the rows get (default: their own, ``rows``).
    ``lac_layers``: ``last`` = L_ac at output block 11 [stated]; ``all`` = the mean over all
    16 cross-attention layers (the paper's Table IV alternative) [reconstructed].
    ``copy_net``: the copy's module over ``unet`` (:meth:`P3SModel.copy_module`), built if None.
    ``precision``: the dtype the U-Nets' inputs are cast to (:func:`training_precision`).
    """
    device = data.latents.device
    x0 = data.latents[rows]
    noise, timesteps = noise.to(device), timesteps.to(device)
    sigma = sigmas[timesteps].view(-1, 1, 1, 1)
    cast = precision.inputs if precision is not None else (lambda tensor: tensor)
    x_in = cast((x0 + sigma * noise) / torch.sqrt(sigma**2 + 1.0))
    context = cast(
        torch.where(drop.to(device).view(-1, 1, 1), data.uncond.expand_as(data.contexts[rows]), data.contexts[rows])
    )
    t = timesteps.float()

    hint_rows = rows if hint_rows is None else hint_rows
    latent_masks = None if data.latent_masks is None else data.latent_masks[hint_rows]
    hint = p3s.encoder(data.tokens[hint_rows], data.mask_grids[hint_rows], data.latents[hint_rows], latent_masks)
    maps = {} if maps is None else maps
    blocks = [LAST_CROSS_ATTENTION] if lac_layers == "last" else [(s.block, s.block_id) for s in p3s.sites]
    probe = {
        "patches_replace": {"attn2": {b: make_attention_probe(maps, _map_name("copy", b)) for b in blocks}},
        ATTENTION_OVERRIDE_KEY: attention_override,
    }
    captured = run_copy(p3s, x_in, t, context, hint, probe, base=unet, copy_net=copy_net)
    options = {
        "patches": {f"{a}_output_patch": [make_injection_patch(a, _STATE_KEY)] for a in ATTENTIONS},
        "patches_replace": {"attn2": {b: make_attention_probe(maps, _map_name("frozen", b)) for b in blocks}},
        _STATE_KEY: {"deltas": injection_deltas(p3s, captured, 1.0), "rows": None},
        ATTENTION_OVERRIDE_KEY: attention_override,
    }
    noise_pred = unet(x_in, t, context=context, transformer_options=options)
    l_ldm = ldm_loss(noise_pred.float(), noise)
    terms = [
        attention_consistency_loss(maps[_map_name("copy", b)], maps[_map_name("frozen", b)], normalisation)
        for b in blocks
    ]
    return l_ldm, torch.stack(terms).mean()


def _map_name(model: str, block: tuple[str, int]) -> str:
    """``copy`` / ``frozen`` for the last cross-attention layer, ``copy:input_1`` etc. for the others."""
    return model if block == LAST_CROSS_ATTENTION else f"{model}:{block[0]}_{block[1]}"


def _hint_rows(rows: torch.Tensor, references: int, source: str, gen: torch.Generator) -> torch.Tensor:
    """Whose hint each row gets: its own (``own``), or another reference's (``other``) [our addition].

    With its own latent in the hint the copy can read what it denoises: with ``hint_region``
    ``image`` that includes the very background, which sampling never gives; with ``subject``
    only the subject, which is what the references give at sampling. ``other`` makes the
    hint as foreign to the target as at sampling (needs 2+ references; with one, ``own``).
    """
    if source == "own" or references < 2:
        return rows
    return (rows + torch.randint(1, references, rows.shape, generator=gen)) % references


def _parameter_groups(trainable: dict[str, nn.Parameter], settings: TrainSettings, low_rank: set[int]) -> list[dict]:
    """AdamW groups: the copy (``lr``), the zero layers (``injection_lr``; low-rank ones, ids in
    ``low_rank``, times ``low_rank_lr_scale``), the hint path (``lr * hint_lr_scale``)."""
    hint = [p for n, p in trainable.items() if n.startswith(HINT_PATH)]
    copy = [p for n, p in trainable.items() if n.startswith("copy.")]
    rest = [p for n, p in trainable.items() if not n.startswith(("copy.", *HINT_PATH))]
    injection_lr = settings.injection_lr or settings.lr
    groups = [
        ([p for p in rest if id(p) not in low_rank], injection_lr),
        ([p for p in rest if id(p) in low_rank], injection_lr * settings.low_rank_lr_scale),
        (hint, settings.lr * settings.hint_lr_scale),
        (copy, settings.lr),
    ]
    return [{"params": params, "lr": lr} for params, lr in groups if params]


def reference_attention(
    p3s: P3SModel,
    unet: nn.Module,
    sigmas: torch.Tensor,
    data: TrainingData,
    index: int = 0,
    timestep: int = NUM_TIMESTEPS // 2,
    seed: int = 1234,
    precision: str = "auto",
    compute_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(frozen, copy)`` cross-attention probabilities ``[H, N, T]`` at the last cross-attention layer.

    One training-style forward on reference ``index`` (its own prompt, no dropout) at ``timestep``
    with fixed noise: what ``L_ac`` compares for that image, in training's precision path.
    """
    device = next(unet.parameters()).device
    data = data.to(device)
    sigmas = sigmas.detach().to(device=device, dtype=torch.float32)
    noise = torch.randn((1, *data.latents.shape[1:]), generator=torch.Generator().manual_seed(seed))
    maps: dict[str, torch.Tensor] = {}
    path = training_precision(precision, device, compute_dtype or unet_compute_dtype(unet))
    with torch.inference_mode(False), torch.no_grad(), path.context(device), casting_weights(p3s):
        step_losses(
            p3s,
            unet,
            sigmas,
            data,
            torch.tensor([index]),
            noise,
            torch.tensor([timestep]),
            torch.zeros(1, dtype=torch.bool),
            maps=maps,
            precision=path,
        )
    return maps["frozen"].float().cpu(), maps["copy"].float().cpu()


def evaluate_loss(
    p3s: P3SModel, unet: nn.Module, sigmas: torch.Tensor, data: TrainingData, gamma: float = 0.1, seed: int = 1234
) -> float:
    """Mean ``L_LDM + gamma L_ac`` over every image at 8 fixed timesteps and noises (no dropout)."""
    device = next(unet.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    data = data.to(device)
    sigmas = sigmas.detach().to(device=device, dtype=torch.float32)
    rows = torch.arange(data.latents.shape[0])
    totals = []
    path = training_precision("auto", device, unet_compute_dtype(unet))
    with torch.inference_mode(False), torch.no_grad(), path.context(device), casting_weights(p3s):
        for t in torch.linspace(50, NUM_TIMESTEPS - 50, 8).long():
            noise = torch.randn(data.latents.shape, generator=gen)
            timesteps = t.repeat(len(rows))
            drop = torch.zeros(len(rows), dtype=torch.bool)
            l_ldm, l_ac = step_losses(p3s, unet, sigmas, data, rows, noise, timesteps, drop, precision=path)
            totals.append(float(l_ldm + gamma * l_ac))
    return sum(totals) / len(totals)


def _draw(shape: torch.Size, dropout: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    noise = torch.randn(shape, generator=gen)
    timesteps = torch.randint(0, NUM_TIMESTEPS, (shape[0],), generator=gen)
    drop = torch.rand(shape[0], generator=gen) < dropout
    return noise, timesteps, drop


@contextlib.contextmanager
def _frozen(unet: nn.Module) -> Iterator[None]:
    """The frozen U-Net without gradients; weights made under inference mode swapped for aliases.

    Inference tensors cannot be saved for backward. Each one is swapped, while training only,
    for a normal tensor over the same memory (no copy: a copy would double the frozen U-Net's
    memory); nothing writes to them, and the original tensors are put back afterwards.
    """
    saved = []
    for module in unet.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            saved.append((module, name, param, param.requires_grad))
            if param.is_inference():
                module._parameters[name] = nn.Parameter(_normal_alias(param), requires_grad=False)
            else:
                param.requires_grad_(False)
    try:
        yield
    finally:
        for module, name, param, requires_grad in saved:
            module._parameters[name] = param
            if not param.is_inference():
                param.requires_grad_(requires_grad)


def _normal_alias(tensor: torch.Tensor) -> torch.Tensor:
    """A normal (non-inference) tensor sharing ``tensor``'s memory, shape and strides."""
    with torch.inference_mode(False):
        alias = torch.empty(0, dtype=tensor.dtype, device=tensor.device)
        return alias.set_(tensor.untyped_storage(), tensor.storage_offset(), tensor.size(), tensor.stride())


@contextlib.contextmanager
def _only_trainable(p3s: P3SModel, trainable: dict[str, nn.Parameter]) -> Iterator[None]:
    keep = {id(p) for p in trainable.values()}
    flags = [(p, p.requires_grad) for p in p3s.parameters()]
    for param, _ in flags:
        param.requires_grad_(id(param) in keep)
    try:
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)
