"""``P3S Fine-tune``: train a new P3S model on 3-5 cleaned reference images [stated settings]."""

from __future__ import annotations

import sys

import comfy.model_management
import comfy.utils
import folder_paths
import torch
import torch.nn.functional as F
from comfy_api.latest import io

from ..p3s_core.attention_maps import TokenGroup, probs_to_maps
from ..p3s_core.attention_overlay import attention_overlays, label_images
from ..p3s_core.checkpoints import checkpoint_epochs, checkpoint_path, resume_state_of, save_checkpoint
from ..p3s_core.errors import P3SInputError
from ..p3s_core.injection_layers import DEFAULT_INJECTION_RANK, check_injection_rank
from ..p3s_core.loss_plot import plot_losses
from ..p3s_core.model_file import P3SModelFile, next_free_path, resolve_model_path, save_p3s_model
from ..p3s_core.p3s_model import P3SModel
from ..p3s_core.scope_memory import auto_scope, p3s_layer_parameters
from ..p3s_core.scope_memory import scope_needs as memory_of_scopes
from ..p3s_core.shared_copy import DEFAULT_LORA_ALPHA, DEFAULT_LORA_RANK, SCOPES
from ..p3s_core.subject_encoder import DEFAULT_ENCODER_CONFIG
from ..p3s_core.training import (
    DEFAULT_HINT_LR_SCALE,
    PRECISIONS,
    ResumeState,
    TrainHistory,
    TrainingData,
    TrainSettings,
    match_token_lengths,
    reference_attention,
    train_p3s,
)
from ..p3s_core.validation import MAX_PROMPT_CHARS, MAX_WORDS_CHARS, finite, text_length
from .attention_patching import word_groups
from .model_folder import P3S_FOLDER, register_p3s_folder
from .p3s_patching import (
    check_reference_batches,
    check_sd15_model,
    clip_token_width,
    new_p3s_model,
    p3s_model_from_file,
    reference_features,
)
from .p3s_placement import (
    base_compute_dtype,
    load_for_training,
    place_for_base,
    plain_ops_for_training,
    training_clone,
)
from .types import CATEGORY_MODEL, P3SModelType, injection_rank_input, lora_inputs

SCOPE_CHOICES = ("auto", *SCOPES)
EPOCHS_DONE = "p3s_epochs_done"  # kept on a trained model's __dict__: where a further Fine-tune resumes


def _resize(images: torch.Tensor, mask: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Longer side to ``resolution``, both sides multiples of 8 (aspect kept)."""
    h, w = images.shape[1:3]
    factor = resolution / max(h, w)
    size = (max(8, round(h * factor / 8) * 8), max(8, round(w * factor / 8) * 8))
    pixels = F.interpolate(images.movedim(-1, 1), size=size, mode="bilinear", align_corners=False, antialias=True)
    mask = F.interpolate(mask.unsqueeze(1).float(), size=size, mode="bilinear", align_corners=False)
    return pixels.movedim(1, -1).clamp(0, 1), mask.squeeze(1).clamp(0, 1)


def _encode_text(clip, text: str) -> torch.Tensor:
    return clip.encode_from_tokens(clip.tokenize(text))


def _captions(instance_prompt: str, captions: str, images: int) -> list[str]:
    lines = [line.strip() for line in captions.splitlines() if line.strip()]
    if not lines:
        return [instance_prompt] * images
    if len(lines) != images:
        raise P3SInputError(
            f"{len(lines)} captions for {images} reference images: give one caption per line for each image "
            "(in order), or leave captions empty to use the instance prompt."
        )
    return lines


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
                io.Model.Input("model", tooltip="The SD1.5 base model (stays frozen)."),
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
                io.Float.Input("lr", default=1e-5, min=1e-8, max=1e-2, step=1e-6, tooltip="AdamW learning rate."),
                io.Float.Input("gamma", default=0.1, min=0.0, max=10.0, step=0.01, tooltip="Weight of L_ac."),
                io.Float.Input(
                    "dropout", default=0.1, min=0.0, max=1.0, step=0.01, tooltip="Share of steps with empty text."
                ),
                io.Int.Input("resolution", default=512, min=64, max=2048, step=8, tooltip="Longer image side."),
                io.Int.Input("batch_size", default=1, min=1, max=16, tooltip="Images per optimiser step."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, tooltip="Same seed, same model."),
                io.Combo.Input(
                    "precision",
                    options=list(PRECISIONS),
                    default="auto",
                    tooltip="For an fp32 base on a GPU: auto = bf16 autocast where the GPU has native bf16, else fp16 "
                    "with loss scaling; fp32 = no autocast. A base loaded in fp16/bf16 always computes in its own "
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
    ) -> io.NodeOutput:
        # Every check runs before anything is encoded or trained.
        check_sd15_model(model)
        if scope not in SCOPE_CHOICES:
            raise P3SInputError(f"scope must be one of {SCOPE_CHOICES}, not {scope!r}.")
        finite("lora_alpha", lora_alpha)
        injection_rank = check_injection_rank(injection_rank)
        settings = TrainSettings(
            epochs,
            lr,
            gamma,
            dropout,
            batch_size,
            seed,
            precision,
            None,
            "mean",
            gradient_checkpointing,
            hint_lr_scale=hint_lr_scale,
        )
        target = None
        if save_name.strip():
            target = resolve_model_path(
                folder_paths.get_folder_paths(P3S_FOLDER), save_name, must_exist=False, input_name="save_name"
            )
            if not overwrite:
                target = next_free_path(target)  # subject.safetensors taken: subject_00002.safetensors
        elif save_every:
            raise P3SInputError("Checkpoints (save_every) need a save_name: give one, or set save_every to 0.")
        check_reference_batches(reference_images, subject_mask)
        text_length("instance_prompt", instance_prompt, MAX_PROMPT_CHARS)
        text_length("captions", captions or "", MAX_PROMPT_CHARS)
        text_length("attention_word", attention_word or "", MAX_WORDS_CHARS)
        texts = _captions(instance_prompt, captions or "", reference_images.shape[0])
        word_groups = _word_groups(clip, texts[0], attention_word or "")
        images, mask = _resize(reference_images, subject_mask, resolution)
        tokens, grids, latents, latent_masks = reference_features(images, mask, vae, clip_vision, model)
        contexts = match_token_lengths([_encode_text(clip, t) for t in [*texts, ""]])
        data = TrainingData(latents, tokens, grids, torch.cat(contexts[:-1]), contexts[-1], latent_masks)

        encoder = {**DEFAULT_ENCODER_CONFIG, "token_dim": clip_token_width(clip_vision)}
        if continue_from is not None:
            p3s, resume = _continued_model(model, continue_from)
            picked = f"scope {p3s.scope} (of the input model)"
            if scope not in ("auto", p3s.scope):
                settings = TrainSettings(**{**settings.as_dict(), "scope": scope})
                picked = f"scope {scope} of the input model's {p3s.scope} copy"
        else:
            resume = None
            chosen, picked = _pick_scope(scope, model, data, settings, encoder, int(lora_rank), injection_rank)
            with torch.random.fork_rng(devices=[]):  # the encoder's random init follows the seed
                torch.manual_seed(seed)
                p3s = new_p3s_model(model, encoder, chosen, int(lora_rank), float(lora_alpha), injection_rank)
        start_epoch = resume.epoch if resume is not None else 0
        if start_epoch >= epochs:
            raise P3SInputError(
                f"The input P3S model has already been trained for {start_epoch} epochs: set epochs above "
                f"{start_epoch} to train it further (epochs counts the whole training)."
            )
        trained_scope = settings.scope or p3s.scope
        record = {
            **settings.as_dict(),
            "scope": trained_scope,
            "scope_requested": scope,
            "prompts": texts,
            "images": int(images.shape[0]),
            "resumed_from_epoch": start_epoch,
        }
        checkpoints = {e: checkpoint_path(target, e) for e in checkpoint_epochs(epochs, save_every, start_epoch)}
        taken = [str(path) for path in checkpoints.values() if path.exists()]
        if taken and not overwrite:
            raise P3SInputError(f"Checkpoint files already exist ({', '.join(taken)}): enable overwrite or rename.")
        _show_loss(f"P3S Fine-tune: {picked}")
        frozen = training_clone(model)
        load_for_training(frozen)  # CLIP, CLIP vision and VAE offloaded, the U-Net fully loaded
        unet = frozen.model.diffusion_model
        compute_dtype = base_compute_dtype(model)
        bar = comfy.utils.ProgressBar(settings.total_steps(images.shape[0]))

        def on_step(step: int, total: int, history: TrainHistory) -> None:
            bar.update_absolute(step, total)
            _show_loss(f"{trained_scope}: step {step}/{total}  loss {history.total[-1]:.4f}")
            comfy.model_management.throw_exception_if_processing_interrupted()

        def on_epoch(epoch: int, history: TrainHistory, state) -> None:
            if epoch in checkpoints:
                last = history.total[-1] if history.total else None
                done = {**record, "epochs": epoch, "final_loss": last}
                save_checkpoint(checkpoints[epoch], p3s, state(), done, overwrite=bool(overwrite))

        try:
            history = train_p3s(
                p3s,
                unet,
                _sigmas(model),
                data,
                settings,
                on_step,
                frozen.load_device,
                resume=resume,
                on_epoch=on_epoch,
                compute_dtype=compute_dtype,
                frozen_context=lambda: plain_ops_for_training(unet),
            )
        except BaseException:
            del p3s
            comfy.model_management.soft_empty_cache()
            raise
        p3s.__dict__[EPOCHS_DONE] = int(epochs)
        saved = "not saved (save_name is empty)"
        if target is not None:  # saved first: nothing after this can lose the run
            record["final_loss"] = history.total[-1]
            if not overwrite:
                target = next_free_path(target)  # taken while training ran: the next number
            save_p3s_model(target, p3s.state_dict(), p3s.config, record, overwrite=bool(overwrite))
            saved = f"saved {_saved_name(target)}"
        _show_loss(f"{trained_scope}: {len(history.total)} steps, final loss {history.total[-1]:.4f}; {saved}")
        with plain_ops_for_training(unet):
            overlays = _reference_overlays(
                p3s, unet, _sigmas(model), settings.precision, compute_dtype, data, images[0], word_groups
            )
        place_for_base(p3s, model)
        plot = torch.from_numpy(plot_losses(history)).unsqueeze(0)
        return io.NodeOutput(p3s, plot, overlays, ui={"text": [saved]})


def _saved_name(target) -> str:
    """The saved file's name as P3S Loader lists it (relative to its p3s folder, ``/``-separated)."""
    for root in folder_paths.get_folder_paths(P3S_FOLDER):
        try:
            return target.relative_to(root).as_posix()
        except ValueError:
            continue
    return target.name


def _continued_model(model, given) -> tuple[P3SModel, ResumeState]:
    """A new P3S model (float32) with the given model's weights, and where its training stopped.

    The given model is never trained in place (it may be another node's cached output).
    """
    if isinstance(given, P3SModelFile):
        tensors, resume = resume_state_of(given.tensors, given.info)
        return p3s_model_from_file(model, tensors, given.info.config, torch.float32), resume
    if not isinstance(given, P3SModel):
        raise P3SInputError(f"p3s_model must come from P3S Init, Loader or Fine-tune, not {type(given).__name__}.")
    with torch.inference_mode(False):
        state = {k: v.detach().to("cpu", copy=True) for k, v in given.state_dict().items()}
    p3s = p3s_model_from_file(model, state, given.config, torch.float32)
    return p3s, ResumeState(int(given.__dict__.get(EPOCHS_DONE, 0)), {})


def scope_needs(
    model,
    data: TrainingData,
    settings: TrainSettings,
    encoder: dict,
    lora_rank: int,
    injection_rank: int = DEFAULT_INJECTION_RANK,
) -> dict[str, int]:
    """Estimated training memory (bytes) of each scope on ``model``'s device (``p3s_core.scope_memory``)."""
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
    )


def _pick_scope(scope: str, model, *needs_args) -> tuple[str, str]:
    """The scope to build, and a line saying why (``auto``: the richest that fits the free memory).

    ``needs_args``: the rest of :func:`scope_needs`' arguments after ``model``.
    """
    if scope != "auto":
        return scope, f"scope {scope}"
    free = int(comfy.model_management.get_free_memory(model.load_device))
    return auto_scope(free, scope_needs(model, *needs_args), model.load_device)


def _word_groups(clip, prompt: str, word: str) -> tuple[TokenGroup, ...] | None:
    """The context columns of ``word`` in ``prompt``; None for an empty word."""
    if not word.strip():
        return None
    return word_groups(clip, prompt, [word.strip()])


def _reference_overlays(
    p3s, unet, sigmas, precision: str, compute_dtype, data: TrainingData, image: torch.Tensor, groups
) -> torch.Tensor:
    """Frozen, copy and difference overlays on ``image`` (or the image thrice without a word).

    One forward in training's precision path (same device, dtypes and attention).
    """
    if groups is None:
        return image[..., :3].unsqueeze(0).expand(3, -1, -1, -1).clone()
    frozen, copy = reference_attention(p3s, unet, sigmas, data, precision=precision, compute_dtype=compute_dtype)
    size = tuple(data.latents.shape[-2:])
    frozen_map = probs_to_maps(frozen.unsqueeze(0), size, groups)[0, 0]
    copy_map = probs_to_maps(copy.unsqueeze(0), size, groups)[0, 0]
    result = attention_overlays(image, frozen_map, copy_map)
    word = groups[0].label
    return label_images(
        torch.cat([result.frozen, result.copy, result.difference]),
        [f"frozen: {word}", f"copy: {word}", "copy - frozen"],
    )


def _sigmas(model) -> torch.Tensor:
    return model.get_model_object("model_sampling").sigmas


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
