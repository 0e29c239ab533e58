"""``P3S Fine-tune``: train a new P3S model on 3-5 cleaned reference images [stated settings]."""

from __future__ import annotations

import functools
import gc
import sys
from dataclasses import replace

import comfy.model_management
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io

from ..p3s_core.bases.registry import BASE_MODULES, DEFAULT_BASE, base_named
from ..p3s_core.errors import P3SInputError
from ..p3s_core.inspection.attention_maps import TokenGroup
from ..p3s_core.inspection.loss_plot import plot_losses
from ..p3s_core.inspection.reference_overlays import reference_overlays
from ..p3s_core.model.injection_layers import DEFAULT_INJECTION_RANK, check_injection_rank
from ..p3s_core.model.shared_copy import DEFAULT_LORA_ALPHA, DEFAULT_LORA_RANK
from ..p3s_core.model.subject_encoder import DEFAULT_ENCODER_CONFIG
from ..p3s_core.selection.framing import DEFAULT_MARGIN, frame_references
from ..p3s_core.training.finetune_inputs import reference_texts, resize_references
from ..p3s_core.training.finetune_run import (
    DEFAULT_KEEP_CHECKPOINTS,
    EPOCHS_DONE,
    SCOPE_CHOICES,
    check_scope_choice,
    continued_model,
    continued_scope,
    out_of_memory_advice,
    pick_scope,
    save_plan,
    save_target,
    start_epoch,
    training_record,
)
from ..p3s_core.training.learning_check import LearningCheck, advice_for, subject_losses
from ..p3s_core.training.learning_rates import AUTO_LR, SCOPE_LEARNING_RATES, check_lr_choice, resolve_lr
from ..p3s_core.training.loop import train_p3s
from ..p3s_core.training.precision import precision_used
from ..p3s_core.training.prior_preservation import (
    DEFAULT_CLASS_IMAGES,
    check_prior_choice,
    class_prompt_for,
    with_class_images,
)
from ..p3s_core.training.settings import (
    DEFAULT_BACKGROUND_LOSS_WEIGHT,
    DEFAULT_HINT_LR_SCALE,
    PRECISIONS,
    TrainHistory,
    TrainingData,
    TrainSettings,
    match_token_lengths,
)
from ..p3s_core.validation import finite
from .attention_patching import word_groups
from .class_images import (
    conditioning,
    encoded_class_latents,
    generated_class_latents,
    prior_inputs,
    release_sampler_memory,
)
from .framing_node import frame_inputs
from .model_folder import P3S_FOLDER, register_p3s_folder
from .p3s_patching import (
    check_base_model,
    check_reference_batches,
    check_trainable_sampling,
    clip_token_width,
    new_p3s_model,
    p3s_model_from_file,
    reference_features,
    text_conditioning,
)
from .p3s_placement import (
    base_compute_dtype,
    free_memory_for_training,
    host_fp16_works,
    load_for_training,
    place_for_base,
    plain_ops_for_training,
    release_training_clone,
    training_clone,
)
from .types import CATEGORY_MODEL, P3SModelType, injection_rank_input, lora_inputs


class P3SFineTune(io.ComfyNode):
    """Trains the U-Net copy, injection layers and subject encoder with L_LDM + gamma L_ac."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        register_p3s_folder()
        return io.Schema(
            node_id="P3SFineTune",
            display_name="P3S Fine-tune",
            category=CATEGORY_MODEL,
            description="Learn the selected subject from 3-5 cleaned reference images (paper: 60 epochs, lr 1e-5, "
            "gamma 0.1, 10% condition dropout, about 6 minutes on an RTX 3090). Cancel stops within one step "
            "and writes nothing.",
            inputs=[
                io.Model.Input("model", tooltip="The SD1.5 or SDXL base model (stays frozen)."),
                io.Clip.Input("clip", tooltip="The base model's CLIP text encoder (frozen)."),
                io.Vae.Input("vae", tooltip="The base model's VAE (frozen)."),
                io.ClipVision.Input("clip_vision", tooltip="CLIP ViT-L/14 vision model read by the subject encoder."),
                io.Image.Input("reference_images", tooltip="3-5 reference images, cleaned by P3S Inpaint."),
                io.Mask.Input("subject_mask", tooltip="One subject mask per reference image (P3S RNGR Mask)."),
                io.String.Input(
                    "instance_prompt",
                    default="a photo of sks dog",
                    tooltip="Prompt with a rare identifier for the subject, e.g. 'a photo of sks dog'.",
                ),
                io.String.Input(
                    "captions",
                    default="",
                    multiline=True,
                    optional=True,
                    tooltip="Optional: one caption per line, one per image; empty = the instance prompt.",
                ),
                io.Int.Input("epochs", default=60, min=1, max=10000, tooltip="Passes over the images (paper: 60)."),
                io.Float.Input(
                    "lr",
                    default=AUTO_LR,
                    min=0.0,
                    max=1e-2,
                    step=1e-6,
                    tooltip=f"AdamW learning rate; 0 = auto, a rate per scope: {_auto_rates()} (full: the "
                    "paper's; the others measured, our addition). A value above 0 is used on every scope.",
                ),
                io.Float.Input("gamma", default=0.1, min=0.0, max=10.0, step=0.01, tooltip="Weight of L_ac."),
                io.Float.Input(
                    "dropout", default=0.1, min=0.0, max=1.0, step=0.01, tooltip="Share of steps with empty text."
                ),
                io.Int.Input(
                    "resolution",
                    default=base_named(DEFAULT_BASE).DEFAULT_RESOLUTION,
                    min=64,
                    max=2048,
                    step=8,
                    tooltip=f"Longer image side; the bases were trained at {_base_resolutions()}.",
                ),
                io.Int.Input("batch_size", default=1, min=1, max=16, tooltip="Images per optimiser step."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, tooltip="Same seed, same model."),
                io.Combo.Input(
                    "precision",
                    options=list(PRECISIONS),
                    default="auto",
                    tooltip="For an fp32 base on a GPU: auto = bf16 autocast where the GPU has native bf16, else fp16 "
                    "with loss scaling, else (where ComfyUI judges fp16 broken or slow: GTX 16xx, Pascal, Maxwell) "
                    "fp32; fp32 = no autocast. A base loaded in fp16/bf16 always computes in its own "
                    "dtype (trained weights stay fp32). On the CPU: fp32.",
                ),
                io.Combo.Input(
                    "scope",
                    options=list(SCOPE_CHOICES),
                    default="auto",
                    tooltip="What of the U-Net copy trains; the rest shares the base's weights. auto = the richest "
                    "that fits the device's free memory; full = the paper (whole copy, ~14 GB AdamW state); "
                    "attention = the copy's attention layers; lora = low-rank adapters (our addition); "
                    "injection = only zero layers and encoder (lightest, smallest file). With a continue_from "
                    "input auto keeps its scope.",
                ),
                io.Boolean.Input(
                    "gradient_checkpointing", default=False, tooltip="Less memory, about 30% slower steps."
                ),
                io.String.Input(
                    "save_name",
                    default="p3s/subject.safetensors",
                    tooltip="File in models/p3s; empty = do not save. When it exists (and overwrite is off) the "
                    "model is saved as <name>_00002.safetensors, _00003, ... (shown under the node).",
                ),
                io.Boolean.Input("overwrite", default=False, tooltip="Replace an existing file of that name."),
                io.String.Input(
                    "attention_word",
                    default="sks",
                    optional=True,
                    tooltip="A word of the first image's prompt: after training, show where the frozen U-Net and "
                    "the copy attend for it on that image (last cross-attention layer, the one L_ac compares). "
                    "Empty = no overlays.",
                ),
                *lora_inputs(),
                io.Int.Input(
                    "save_every",
                    default=0,
                    optional=True,
                    min=0,
                    max=10000,
                    tooltip="Every N epochs write a checkpoint <save_name>_e<epoch>.safetensors (float32, with the "
                    "optimiser state, to resume exactly); 0 = none. Checkpoints stay when training is cancelled.",
                ),
                injection_rank_input(),
                io.Float.Input(
                    "hint_lr_scale",
                    default=DEFAULT_HINT_LR_SCALE,
                    min=0.01,
                    max=10000.0,
                    step=0.01,
                    optional=True,
                    tooltip="The subject encoder and hint ZeroConv learn at lr x this (our addition, measured in the "
                    "toy world: at one learning rate the references' hint changes nothing); 1 = the paper's single "
                    "learning rate.",
                ),
                P3SModelType.Input(
                    "continue_from",
                    optional=True,
                    tooltip="Continue training this P3S model (from Init, Loader or a previous Fine-tune) up to "
                    "epochs in total; a checkpoint resumes exactly. The input model is not changed.",
                ),
                io.Boolean.Input(
                    "frame_subject",
                    default=True,
                    optional=True,
                    tooltip="Crop each reference to a square around its subject before training (our addition; as "
                    "P3S Frame Subject does), so a subject that is small or beside look-alikes fills the image. On by "
                    "default: it raised identity from look-alike references on every pair measured and cost nothing "
                    "on average on clean ones (docs/toy_world.md).",
                ),
                *frame_inputs(optional=True),
                io.Float.Input(
                    "background_loss_weight",
                    default=DEFAULT_BACKGROUND_LOSS_WEIGHT,
                    min=0.0,
                    max=1.0,
                    step=0.05,
                    optional=True,
                    tooltip="Weight of the denoising loss outside the subject mask (our addition): below 1, what is "
                    "left of look-alikes and backgrounds is learned less than the subject; 1 = the paper's loss. 0.5 "
                    "by default: it raised identity from look-alike references on average and on the worst pair "
                    "measured, and cost nothing on average on clean ones (docs/toy_world.md).",
                ),
                io.Int.Input(
                    "keep_checkpoints",
                    default=DEFAULT_KEEP_CHECKPOINTS,
                    min=0,
                    max=10000,
                    optional=True,
                    tooltip="How many of the newest save_every checkpoints stay on disk (0 = all). An older one is "
                    "deleted only after a newer one is written; the final file is always kept. A checkpoint holds "
                    "the model in float32 with the optimiser state: about 6.5x the saved file (52 MB beside 8 MB).",
                ),
                *prior_inputs(),
            ],
            outputs=[
                P3SModelType.Output("p3s_model", tooltip="The trained subject model; connect to P3S Apply."),
                io.Image.Output("loss_plot", tooltip="Total loss, L_LDM and L_ac over the training steps."),
                io.Image.Output(
                    "attention_overlays",
                    tooltip="Frozen, copy and copy-minus-frozen attention for attention_word on the first reference "
                    "image after training.",
                ),
            ],
        )

    @classmethod
    def execute(
        cls,
        model,
        clip,
        vae,
        clip_vision,
        reference_images,
        subject_mask,
        instance_prompt,
        epochs,
        lr,
        gamma,
        dropout,
        resolution,
        batch_size,
        seed,
        precision,
        scope,
        gradient_checkpointing,
        save_name,
        overwrite,
        captions="",
        attention_word="sks",
        lora_rank=DEFAULT_LORA_RANK,
        lora_alpha=DEFAULT_LORA_ALPHA,
        save_every=0,
        continue_from=None,
        injection_rank=DEFAULT_INJECTION_RANK,
        hint_lr_scale=DEFAULT_HINT_LR_SCALE,
        frame_subject=True,
        frame_margin=DEFAULT_MARGIN,
        background_loss_weight=DEFAULT_BACKGROUND_LOSS_WEIGHT,
        keep_checkpoints=DEFAULT_KEEP_CHECKPOINTS,
        prior_loss_weight=0.0,
        class_prompt="",
        class_images=None,
        class_image_count=DEFAULT_CLASS_IMAGES,
    ) -> io.NodeOutput:
        # Every check runs before anything is encoded or trained.
        base = check_base_model(model)
        noise_levels = check_trainable_sampling(model)
        check_scope_choice(scope)
        lr_asked = check_lr_choice(lr)
        finite("lora_alpha", lora_alpha)
        injection_rank = check_injection_rank(injection_rank)
        settings = TrainSettings(
            epochs,
            lr_asked or SCOPE_LEARNING_RATES["full"],  # set per scope below when auto
            gamma,
            dropout,
            batch_size,
            seed,
            precision,
            None,
            "mean",
            gradient_checkpointing,
            hint_lr_scale=hint_lr_scale,
            background_loss_weight=background_loss_weight,
            prior_loss_weight=prior_loss_weight,
        )
        prior_on = check_prior_choice(prior_loss_weight, class_image_count, class_images)
        folders = folder_paths.get_folder_paths(P3S_FOLDER) if save_name.strip() else []
        target = save_target(folders, save_name, save_every, overwrite)
        masks = check_reference_batches(reference_images, subject_mask)
        texts = reference_texts(instance_prompt, captions or "", attention_word or "", reference_images.shape[0])
        word_groups = _word_groups(clip, texts[0], attention_word or "")
        class_text = class_prompt_for(instance_prompt, attention_word or "", class_prompt or "") if prior_on else None
        if frame_subject:
            images, mask, _ = frame_references(reference_images[..., :3], masks, resolution, frame_margin)
        else:
            images, mask = resize_references(reference_images, subject_mask, resolution)
        tokens, grids, latents, latent_masks = reference_features(images, mask, vae, clip_vision, model)
        prompts = [*texts, "", *([class_text] if prior_on else [])]
        contexts, ys = text_conditioning(clip, model, prompts, tuple(latents.shape[-2:]), base.PIXELS_PER_LATENT)
        contexts = match_token_lengths(contexts)
        r = len(texts)
        data = TrainingData(
            latents,
            tokens,
            grids,
            torch.cat(contexts[:r]),
            contexts[r],
            latent_masks,
            ys=None if ys is None else ys[:r],
            uncond_y=None if ys is None else ys[r : r + 1],
            prediction=noise_levels.prediction,
            sigma_data=noise_levels.sigma_data,
            unet_timesteps=noise_levels.unet_timesteps,
        )
        class_context = (contexts[-1], None if ys is None else ys[-1:]) if prior_on else None

        encoder = {**DEFAULT_ENCODER_CONFIG, "token_dim": clip_token_width(clip_vision)}
        compute_dtype = base_compute_dtype(model)
        used = precision_used(precision, model.load_device, compute_dtype, fp16_supported=host_fp16_works)
        settings = replace(settings, precision=used)  # what auto means on this card, asked of ComfyUI
        if continue_from is not None:
            p3s, resume = continued_model(continue_from, lambda t, c: p3s_model_from_file(model, t, c, torch.float32))
            settings, picked = continued_scope(settings, scope, p3s.scope)
        else:
            resume = None
            free = free_memory_for_training(model) if scope == "auto" else None
            chosen, picked = pick_scope(scope, free, model, data, settings, encoder, int(lora_rank), injection_rank)
            with torch.random.fork_rng(devices=[]):  # the encoder's random init follows the seed
                torch.manual_seed(seed)
                p3s = new_p3s_model(model, encoder, chosen, int(lora_rank), float(lora_alpha), injection_rank)
        start = start_epoch(resume, epochs)
        trained_scope = settings.scope or p3s.scope
        rate, rate_line = resolve_lr(lr_asked, trained_scope)
        settings = replace(settings, lr=rate)
        record = training_record(settings, trained_scope, scope, texts, images.shape[0], start)
        record.update(precision=precision, precision_used=used, prediction=noise_levels.prediction)
        record.update(lr_requested="auto" if lr_asked == AUTO_LR else lr_asked, lr_reason=rate_line)
        if prior_on:
            made = f"{class_images.shape[0]} given" if class_images is not None else f"{class_image_count} generated"
            record.update(class_prompt=class_text, class_images=made)
        plan = save_plan(target, epochs, save_every, start, overwrite, record, keep_checkpoints)
        if prior_on:  # after every check: the class images are the first expensive work
            data = _with_prior(data, model, clip, vae, class_text, class_context, class_images, class_image_count, seed)
        _show_loss(f"P3S Fine-tune: {picked}; {rate_line}; precision {used}{_checkpoint_disk(plan, p3s)}")
        frozen = training_clone(model)
        load_for_training(frozen)  # CLIP, CLIP vision and VAE offloaded, the U-Net fully loaded
        unet = frozen.model.diffusion_model
        sigmas = noise_levels.sigmas
        bar = comfy.utils.ProgressBar(settings.total_steps(images.shape[0]))
        measure = functools.partial(
            _subject_loss, unet=unet, sigmas=sigmas, data=data, precision=settings.precision, dtype=compute_dtype
        )
        before = None if resume is None else measure(p3s.to(frozen.load_device))  # a fresh model is the base

        last_step = [start * settings.steps_per_epoch(images.shape[0])]

        def on_step(step: int, total: int, history: TrainHistory) -> None:
            last_step[0] = step
            bar.update_absolute(step, total)
            _show_loss(f"{trained_scope}: step {step}/{total}  loss {history.total[-1]:.4f}")
            comfy.model_management.throw_exception_if_processing_interrupted()

        def on_epoch(epoch: int, history: TrainHistory, state) -> None:
            plan.save_checkpoint(epoch, p3s, history, state)

        out_of_memory = False
        try:
            history = train_p3s(
                p3s,
                unet,
                sigmas,
                data,
                settings,
                on_step,
                frozen.load_device,
                resume=resume,
                on_epoch=on_epoch,
                compute_dtype=compute_dtype,
                frozen_context=lambda: plain_ops_for_training(unet, p3s),
            )
        except torch.OutOfMemoryError:
            out_of_memory = True  # handled below: this block's traceback holds the model and activations
        except BaseException:
            del p3s
            release_training_clone(frozen, model)
            comfy.model_management.soft_empty_cache()
            raise
        if out_of_memory:
            del p3s
            release_training_clone(frozen, model)
            gc.collect()
            comfy.model_management.soft_empty_cache()
            estimate = picked if scope == "auto" and continue_from is None else None
            raise P3SInputError(
                out_of_memory_advice(
                    settings,
                    trained_scope,
                    resolution,
                    last_step[0] + 1,
                    settings.total_steps(images.shape[0]),
                    estimate,
                    plan.written,
                )
            )
        p3s.__dict__[EPOCHS_DONE] = int(epochs)
        written = plan.save_final(p3s, history)  # saved first: nothing after this can lose the run
        saved = f"saved {_saved_name(written)}" if written is not None else "not saved (save_name is empty)"
        _show_loss(f"{trained_scope}: {len(history.total)} steps, final loss {history.total[-1]:.4f}; {saved}")
        check = _learning_check(measure, p3s, before)
        learned = check.line(advice_for(trained_scope, settings.lr, epochs)) if check else _NOT_MEASURED
        _show_loss(f"{trained_scope}: {learned}; {saved}")
        with plain_ops_for_training(unet):
            overlays = reference_overlays(
                p3s, unet, sigmas, settings.precision, compute_dtype, data, images[0], word_groups
            )
        release_training_clone(frozen, model)  # a dynamic MODEL's static rebuild: its memory back
        place_for_base(p3s, model)
        caption = check.summary() if check else _NOT_MEASURED
        plot = torch.from_numpy(plot_losses(history, caption=caption, warn=not (check and check.learned)))
        return io.NodeOutput(p3s, plot.unsqueeze(0), overlays, ui={"text": [saved, learned]})


def _with_prior(data, model, clip, vae, class_text, class_condition, given, count, seed) -> TrainingData:
    """``data`` with prior preservation's class latents: ``given`` encoded, or ``count`` made by the base;
    ``class_condition``: the class prompt's ``(context, y)`` (``y`` None without an ADM input)."""
    shape = tuple(data.latents.shape[-2:])
    if given is not None:
        latents = encoded_class_latents(given, vae, model, shape)
    else:
        _show_loss(f"P3S Fine-tune: generating {count} class images of '{class_text}' for prior preservation")
        positive, negative = conditioning(clip, class_text), conditioning(clip, "")
        latents = generated_class_latents(model, positive, negative, int(count), shape, seed)
        release_sampler_memory()
    context, y = class_condition
    return with_class_images(data, latents, context, y)


def _base_resolutions() -> str:
    """``512 (SD1.5), 1024 (SDXL)``: each base's training size, as the tooltip shows it."""
    return ", ".join(f"{b.DEFAULT_RESOLUTION} ({b.DISPLAY_NAME})" for b in BASE_MODULES)


def _auto_rates() -> str:
    """``full 1e-5, attention 1e-5, ...``: lr auto's rate of every scope, as the tooltip shows it."""
    return ", ".join(f"{scope} {rate:.0e}".replace("e-0", "e-") for scope, rate in SCOPE_LEARNING_RATES.items())


def _subject_loss(p3s, unet, sigmas, data, precision, dtype) -> float:
    """The references' denoising loss through the base alone (``p3s`` None) or with ``p3s``."""
    with plain_ops_for_training(unet):
        return subject_losses(p3s, unet, sigmas, data, precision, dtype)


_NOT_MEASURED = "subject loss not measured (out of memory after training; the model is kept)"


def _learning_check(measure, p3s, before: float | None) -> LearningCheck | None:
    """Base, before and after; None when it could not be measured (out of memory): the run is still kept."""
    try:
        base = measure(None)
        after = measure(p3s)
    except torch.OutOfMemoryError:
        comfy.model_management.soft_empty_cache()
        return None
    return LearningCheck(base, base if before is None else before, after)


def _checkpoint_disk(plan, p3s) -> str:
    """``; checkpoints: at most N x M MB on disk`` for a run that writes checkpoints, else nothing."""
    if not plan.checkpoints:
        return ""
    each = 12 * sum(t.numel() for t in p3s.state_dict().values() if t.is_floating_point())  # fp32 + AdamW moments
    count = len(plan.checkpoints) if plan.keep == 0 else min(plan.keep, len(plan.checkpoints))
    return f"; checkpoints: at most {count} x {each / 2**20:.0f} MB on disk"


def _saved_name(target) -> str:
    """The saved file's name as P3S Loader lists it (relative to its p3s folder, ``/``-separated)."""
    for root in folder_paths.get_folder_paths(P3S_FOLDER):
        try:
            return target.relative_to(root).as_posix()
        except ValueError:
            continue
    return target.name


def _word_groups(clip, prompt: str, word: str) -> tuple[TokenGroup, ...] | None:
    """The context columns of ``word`` in ``prompt``; None for an empty word."""
    if not word.strip():
        return None
    return word_groups(clip, prompt, [word.strip()])


def _show_loss(text: str) -> None:
    """The current loss under the node in the frontend (no-op outside a server run).

    Uses the running server's module only: importing ComfyUI's ``server`` where none runs (a
    script, a test) has side effects on ``sys.modules`` that break later imports.
    """
    server = sys.modules.get("server")
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    if instance is None:
        return
    from comfy_execution.utils import get_executing_context

    context = get_executing_context()
    if context is not None:
        instance.send_progress_text(text, context.node_id)
