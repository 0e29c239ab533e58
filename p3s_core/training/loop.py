"""Fine-tuning a P3S model on 3-5 reference images: ``L = L_LDM + gamma * L_ac`` [stated].

[stated] AdamW, lr 1e-5, 60 epochs over the reference images, gamma 0.1, 10% condition
dropout (the text context replaced by the empty prompt's, for classifier-free guidance).
Frozen: CLIP, VAE and the base U-Net. Trained: the U-Net copy, the zero layers, the subject
encoder. Timesteps are drawn uniformly from 0..999 and noised as in SD training
(``x_t = (x_0 + sigma_t eps) / sqrt(sigma_t^2 + 1)``); the target is the noise for eps-prediction
[stated], ``v`` for v-prediction bases (:mod:`.prediction`, our addition).

[reconstructed] The copy's injections enter with weight 1 (the sampling schedule is not used
in training). Training trains everything the P3S model owns; its scope (see
:mod:`..model.shared_copy`) says what that is: ``full`` [stated] the whole copy; ``attention`` the
copy's attention layers; ``lora`` (our addition) low-rank adapters over the shared layers;
``injection`` none of the copy (it is the base U-Net's own modules). The zero layers, hint
ZeroConv and encoder train in every scope. A ``full`` model can also be trained with scope
``attention`` or ``injection``, which then trains only that part of its whole copy.

Resume (our addition): the randomness of epoch ``e`` (image order, noise, timesteps, dropout)
comes from a generator seeded with ``(seed, e)`` alone, so training can stop after any epoch
and go on later; :class:`ResumeState` carries the epochs done, the AdamW state and, training
in fp16, the GradScaler's scale and growth tracker (else a resumed run would start again at
65536 and skip other steps), which is what a checkpoint stores. Resuming from a checkpoint of
epoch k with the same settings gives the same weights as an uninterrupted run (on CUDA up to
the nondeterminism of its kernels, see docs/gpus_and_vram.md).

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
  :data:`..model.injection_layers.LOW_RANK_LR_SCALE`; 1 = the same as full layers).
* ``lac_layers``: ``last`` (the base's last cross-attention layer, SD1.5's output block 11, [stated])
  or ``all`` cross-attention layers (16 on SD1.5).
* ``background_loss_weight``: ``L_LDM`` outside the subject mask weighs this much (1 = the
  paper's loss), so that what is left of look-alikes and backgrounds is learned less.
* ``prior_loss_weight`` (DreamBooth's prior preservation): above 0, each step also denoises as
  many class images (``TrainingData.prior_latents``, made by the base from the class prompt)
  under the class prompt, each with a reference's hint as at sampling, and adds that
  ``L_LDM`` times the weight. Its draws come from a stream of their own, so the subject's
  steps are the same with and without it; its backward runs apart (no second graph held).

Only trained parameters are float32 (master weights); the forward runs in the base's compute
dtype, or under autocast for an fp32 base on CUDA (:mod:`.precision`). Gradients are
freed right after each optimiser step; gradient checkpointing wraps the layers of both U-Nets
(:mod:`.checkpointing`). Nothing here imports ComfyUI.
"""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Callable, Iterator

import torch
from torch import nn

from ..errors import P3SInputError
from ..model.injection_layers import low_rank_parameters
from ..model.p3s_model import P3SModel
from .checkpointing import checkpointed
from .optimiser import (
    load_optimizer_tensors,
    load_scaler_state,
    optimizer_tensors,
    parameter_groups,
    scaler_state,
    trainable_parameters,
)
from .precision import casting_weights, make_optimizer, training_precision, unet_compute_dtype
from .settings import EpochCallback, ResumeState, StepCallback, TrainHistory, TrainingData, TrainSettings
from .step import draw_step, epoch_generator, pick_hint_rows, step_losses


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
    if settings.background_loss_weight != 1.0 and data.latent_masks is None:
        raise P3SInputError(
            "background_loss_weight below 1 weights the loss by the subject masks at latent size, which this "
            "training data lacks: pass latent_masks, or set background_loss_weight to 1."
        )
    prior_on = settings.prior_loss_weight > 0
    if prior_on and not data.has_prior:
        raise P3SInputError(
            "prior_loss_weight above 0 trains on class images, which this training data lacks: give class images "
            "(prior_latents and prior_contexts), or set prior_loss_weight to 0."
        )
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
                optimizer = make_optimizer(parameter_groups(trainable, settings, low_rank_parameters(p3s)), settings.lr)
                if resume is not None and resume.optimizer:
                    load_optimizer_tensors(optimizer, resume.optimizer, trainable)
                scaler = precision.scaler(device)
                if scaler is not None and resume is not None and resume.scaler is not None:
                    load_scaler_state(scaler, resume.scaler)
                images = data.latents.shape[0]
                total = settings.total_steps(images)
                step = start_epoch * settings.steps_per_epoch(images)
                for epoch in range(start_epoch, settings.epochs):
                    gen = epoch_generator(settings.seed, epoch)
                    hint_gen = epoch_generator(settings.seed + 1, epoch)
                    prior_gen = epoch_generator(settings.seed + 2, epoch)  # apart: the subject's draws stay the same
                    for rows in torch.randperm(images, generator=gen).split(settings.batch_size):
                        step += 1
                        noise, timesteps, drop = draw_step(data.latents[rows].shape, settings.dropout, gen)
                        hint_rows = pick_hint_rows(rows, images, settings.hint_source, hint_gen)
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
                                background_loss_weight=settings.background_loss_weight,
                            )
                        loss = losses[0].float() + settings.gamma * losses[1].float()
                        _check_finite(loss, step, settings)
                        _backward(loss, scaler)
                        prior = None
                        if prior_on:
                            prior = _prior_loss(
                                p3s, unet, sigmas, data, len(rows), prior_gen, settings, precision, copy_net
                            )
                            _check_finite(prior, step, settings)
                            _backward(settings.prior_loss_weight * prior, scaler)
                        if scaler is not None:
                            scaler.step(optimizer)
                            scaler.update()
                        else:
                            optimizer.step()
                        optimizer.zero_grad(set_to_none=True)  # free the gradients before the next forward
                        weighted_prior = 0.0 if prior is None else settings.prior_loss_weight * float(prior.detach())
                        history.total.append(float(loss.detach()) + weighted_prior)
                        history.ldm.append(float(losses[0].detach()))
                        history.ac.append(float(losses[1].detach()))
                        if prior is not None:
                            history.prior.append(float(prior.detach()))
                        del loss, losses, prior
                        if on_step is not None:
                            on_step(step, total, history)
                    if on_epoch is not None:
                        state = functools.partial(_resume_state, epoch + 1, optimizer, names, scaler)
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


def _check_finite(loss: torch.Tensor, step: int, settings: TrainSettings) -> None:
    if not torch.isfinite(loss):
        raise P3SInputError(
            f"The training loss became {loss.item()} at step {step}: lower the learning rate "
            f"(hint path lr = {settings.lr * settings.hint_lr_scale:g}), or train in fp32 / bf16 instead of fp16."
        )


def _backward(loss: torch.Tensor, scaler: torch.amp.GradScaler | None) -> None:
    """Gradients of ``loss`` added to the parameters' (scaled for fp16); its graph is freed."""
    (scaler.scale(loss) if scaler is not None else loss).backward()


def _prior_loss(p3s, unet, sigmas, data: TrainingData, count: int, gen, settings, precision, copy_net) -> torch.Tensor:
    """Prior preservation's ``L_LDM`` on ``count`` class images drawn by ``gen`` (our addition, DreamBooth's).

    Each class image is denoised under its class prompt with a reference's hint, as at sampling;
    its own draw of noise, timestep and dropout.
    """
    classes = torch.randint(data.prior_latents.shape[0], (count,), generator=gen)
    hint_rows = torch.randint(data.latents.shape[0], (count,), generator=gen)
    noise, timesteps, drop = draw_step(data.prior_latents[classes].shape, settings.dropout, gen)
    prior_ys = None if data.prior_ys is None else data.prior_ys[classes]
    targets = (data.prior_latents[classes], data.prior_contexts[classes], prior_ys)
    with precision.context(data.latents.device):
        l_prior, _ = step_losses(
            p3s,
            unet,
            sigmas,
            data,
            hint_rows,
            noise,
            timesteps,
            drop,
            copy_net=copy_net,
            precision=precision,
            hint_rows=hint_rows,
            targets=targets,
        )
    return l_prior.float()


def _resume_state(
    epoch: int, optimizer: torch.optim.Optimizer, names: dict[int, str], scaler: torch.amp.GradScaler | None
) -> ResumeState:
    return ResumeState(epoch, optimizer_tensors(optimizer, names), scaler_state(scaler))


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
