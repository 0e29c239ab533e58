"""ComfyUI glue for P3S: the base check, base weights, hint encoding, and patching a MODEL.

:func:`apply_p3s` clones the MODEL (never mutating it), adds the copy-running
``DIFFUSION_MODEL`` wrapper and the attn1/attn2 output patches under one unique key, and
registers the P3S model as an additional model so ComfyUI loads and offloads it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from types import ModuleType

import comfy.model_management
import comfy.model_patcher
import comfy.model_sampling
import comfy.patcher_extension
import torch

from ..p3s_core.bases.registry import base_for_model
from ..p3s_core.batches import check_masks_cover_something, match_mask_batch
from ..p3s_core.errors import P3SInputError
from ..p3s_core.model.injection_layers import DEFAULT_INJECTION_RANK
from ..p3s_core.model.injection_pass import make_injection_patch
from ..p3s_core.model.model_file import split_optimizer_state
from ..p3s_core.model.p3s_model import P3SModel, p3s_model_from_tensors
from ..p3s_core.model.run_weights import RunWeights
from ..p3s_core.model.shared_copy import DEFAULT_LORA_ALPHA, DEFAULT_LORA_RANK
from ..p3s_core.model.subject_encoder import mask_to_latent, mask_to_patch_grid, patch_grid_side
from ..p3s_core.sampling.injection import InjectionSettings, RegionSettings, WeightSchedule, make_diffusion_wrapper
from ..p3s_core.sampling.regions import (
    AreaLog,
    as_region_masks,
    check_feather,
    make_area_recorder,
    make_batch_check,
)
from ..p3s_core.selection.letterbox import letterbox_pixels
from ..p3s_core.training.prediction import EDM, EPS, V_PREDICTION, edm_training_sigmas
from ..p3s_core.training.step import NUM_TIMESTEPS
from ..p3s_core.validation import finite, window
from .p3s_placement import P3SModelPatcher, base_compute_dtype, place_for_base

STATE_KEY_PREFIX = "p3s_injection"


def check_base_model(model: comfy.model_patcher.ModelPatcher) -> ModuleType:
    """The base module (:mod:`p3s_core.bases`) of a MODEL P3S supports, its U-Net's layout checked;
    a ``P3SInputError`` naming what was given and the supported bases otherwise."""
    base = base_for_model(model)
    base.check_layout(model.model.diffusion_model)
    return base


@dataclass(frozen=True)
class TrainableSampling:
    """How P3S Fine-tune draws and scales noise for a MODEL (:func:`check_trainable_sampling`).

    ``prediction``: ``eps``, ``v`` or ``edm`` (:mod:`p3s_core.training.prediction`); ``sigmas``:
    the training noise levels, drawn uniformly by index; ``unet_timesteps``: what the U-Net is
    given per index (None: the index, on the discrete schedule); ``sigma_data``: the model's.
    """

    prediction: str
    sigmas: torch.Tensor
    unet_timesteps: torch.Tensor | None
    sigma_data: float


def check_trainable_sampling(model: comfy.model_patcher.ModelPatcher) -> TrainableSampling:
    """How the training step noises and targets for this MODEL, or a ``P3SInputError`` (our addition).

    Read from what ComfyUI samples with (``model_sampling``), so a Model Sampling node in front
    (Discrete ``v_prediction`` for a v-pred checkpoint loaded as eps, Continuous EDM) trains as it
    samples. Trained: eps-, v- and EDM (F-) prediction over ComfyUI's 1000 discrete training sigmas
    (SD1.5, SDXL, their v-prediction fine-tunes) or over a continuous EDM range (Playground 2.5,
    ``V_PREDICTION_EDM`` models such as CosXL: noise levels from EDM's log-normal training
    distribution, timesteps from the model, [reconstructed]). Refused: x0, flow and other
    continuous samplings, whose input and timesteps follow neither.
    """
    sampling = model.get_model_object("model_sampling")
    prediction = next((name for name, kind in _PREDICTIONS if _samples_as(sampling, kind)), None)
    sigma_data = float(getattr(sampling, "sigma_data", 1.0))
    sigmas = getattr(sampling, "sigmas", None)
    discrete = isinstance(sampling, comfy.model_sampling.ModelSamplingDiscrete)  # timestep = the sigma's index
    if prediction is not None and discrete and sigmas is not None and sigmas.shape[0] == NUM_TIMESTEPS:
        return TrainableSampling(prediction, sigmas, None, sigma_data)
    if prediction is not None and isinstance(sampling, comfy.model_sampling.ModelSamplingContinuousEDM):
        table = edm_training_sigmas(float(sampling.sigma_min), float(sampling.sigma_max), NUM_TIMESTEPS)
        return TrainableSampling(prediction, table, sampling.timestep(table).float(), sigma_data)
    raise P3SInputError(
        f"P3S Fine-tune trains eps-, v- and EDM-prediction models (SD1.5, SDXL and their v-prediction "
        f"fine-tunes over {NUM_TIMESTEPS} discrete noise levels; continuous EDM ones such as Playground 2.5); "
        f"this MODEL samples with {type(sampling).__name__}. Use such a checkpoint (not a flow or x0 one) and no "
        "Model Sampling node other than Discrete eps / v_prediction or Continuous EDM."
    )


_PREDICTIONS = (
    (EPS, comfy.model_sampling.EPS),
    (V_PREDICTION, comfy.model_sampling.V_PREDICTION),
    (EDM, comfy.model_sampling.EDM),
)


def _samples_as(sampling, kind: type) -> bool:
    """Whether ``sampling`` scales the input and reads the output as ComfyUI's ``kind`` does."""
    return all(
        getattr(type(sampling), name, None) is getattr(kind, name) for name in ("calculate_input", "calculate_denoised")
    )


def text_conditioning(
    clip, model: comfy.model_patcher.ModelPatcher, texts: list[str], latent_size: tuple[int, int], pixels: int
) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Each text's context ``[1, T, C]`` and, for a MODEL with an ADM input (SDXL), its ``y`` ``[len, A]``.

    ``y`` is ComfyUI's own (the model's ``encode_adm`` on the pooled output, at the latents' pixel
    size as ComfyUI's sampler gives it); None for a MODEL without one (SD1.5).
    """
    if not getattr(model.model, "adm_channels", 0):
        return [clip.encode_from_tokens(clip.tokenize(t)) for t in texts], None
    height, width = (side * pixels for side in latent_size)
    contexts, ys = [], []
    for text in texts:
        context, pooled = clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)
        contexts.append(context)
        ys.append(model.model.encode_adm(pooled_output=pooled, width=width, height=height).float().cpu())
    return contexts, torch.cat(ys)


def base_diffusion_state_dict(model: comfy.model_patcher.ModelPatcher) -> dict[str, torch.Tensor]:
    """The U-Net's own weights, without weight patches (LoRAs) ComfyUI may have merged in place."""
    prefix = "diffusion_model."
    state = dict(model.model.diffusion_model.state_dict())
    for key, backup in model.backup.items():
        if key.startswith(prefix) and key[len(prefix) :] in state:
            state[key[len(prefix) :]] = backup.weight
    return state


def new_p3s_model(
    model: comfy.model_patcher.ModelPatcher,
    encoder_config: dict | None = None,
    scope: str = "full",
    lora_rank: int = DEFAULT_LORA_RANK,
    lora_alpha: float = DEFAULT_LORA_ALPHA,
    injection_rank: int = DEFAULT_INJECTION_RANK,
) -> P3SModel:
    """An untrained P3S model of ``scope`` over ``model``'s U-Net, placed for it (:func:`place_for_base`).

    Whatever the scope does not train stays the U-Net's own modules (see ``p3s_core.model.shared_copy``).
    Own weights are in the base's compute dtype (never fp8) on the offload device.
    """
    base = check_base_model(model)
    unet = model.model.diffusion_model
    p3s = P3SModel.from_base(
        unet,
        encoder_config,
        base_diffusion_state_dict(model),
        scope,
        lora_rank,
        lora_alpha,
        dtype=base_compute_dtype(model),
        injection_rank=injection_rank,
        base=base.NAME,
    )
    return place_for_base(p3s, model)


def p3s_model_from_file(
    model: comfy.model_patcher.ModelPatcher,
    tensors: dict[str, torch.Tensor],
    config: dict,
    dtype: torch.dtype | None = None,
) -> P3SModel:
    """Rebuild a saved P3S model (``state_dict`` tensors + ``P3SModel.config``) for a MODEL.

    Refuses a model trained on another base architecture (both named) or another base U-Net
    (both fingerprints in the message). A checkpoint's
    optimiser state (``optimizer.*``) is left out. The file's weights go into tensors of the
    base's compute dtype (never into fp8 storage) placed for sampling, or of ``dtype`` where
    given (float32 to resume training), left on the offload device.
    """
    base = check_base_model(model)
    unet = model.model.diffusion_model
    tensors, _ = split_optimizer_state(tensors)
    with torch.inference_mode(False):
        p3s = p3s_model_from_tensors(
            unet, tensors, config, base_diffusion_state_dict(model), dtype or base_compute_dtype(model), base.NAME
        )
    if dtype is None:
        return place_for_base(p3s, model)
    with torch.inference_mode(False):
        return p3s.to(model.offload_device)


def clip_token_width(clip_vision) -> int:
    """Hidden size of a ComfyUI ``ClipVisionModel``'s tokens."""
    return int(clip_vision.model.vision_model.embeddings.patch_embedding.weight.shape[0])


def check_reference_batches(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mask as ``[R, H, W]`` matching the ``[R, H, W, C]`` images, none of them empty, or a clear error."""
    masks = match_mask_batch(images, mask, "reference images", "subject masks")
    check_masks_cover_something(masks, "reference image")
    return masks


def reference_features(
    images: torch.Tensor,
    mask: torch.Tensor,
    vae,
    clip_vision,
    model: comfy.model_patcher.ModelPatcher,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the subject encoder reads: CLIP tokens, mask on the patch grid, model-space latents,
    and the mask at the latents' size.

    Pixels go to CLIP letterboxed (padded to a centred square, as the RNGR mask does), and the
    mask goes to the patch grid through the same padding.
    """
    mask = check_reference_batches(images, mask)
    images = images[..., :3]
    comfy.model_management.load_model_gpu(clip_vision.patcher)
    pixels = letterbox_pixels(
        images.to(clip_vision.load_device),
        clip_vision.image_size,
        clip_vision.image_mean,
        clip_vision.image_std,
    )
    tokens = clip_vision.model(pixel_values=pixels, intermediate_output=-2)[1]
    side, _ = patch_grid_side(tokens.shape[1])
    latent = model.model.process_latent_in(vae.encode(images))
    latent_mask = mask_to_latent(mask.to(latent.device), tuple(latent.shape[-2:]))
    return tokens, mask_to_patch_grid(mask, side, pad_to_square=True), latent, latent_mask


def encode_hint(
    p3s: P3SModel,
    images: torch.Tensor,
    mask: torch.Tensor,
    vae,
    clip_vision,
    model: comfy.model_patcher.ModelPatcher,
) -> torch.Tensor:
    """The hint ``[R, 4, H/8, W/8]`` of the reference images, in the model's latent space."""
    tokens, grid, latent, latent_mask = reference_features(images, mask, vae, clip_vision, model)
    param = next(p3s.encoder.parameters())
    with torch.no_grad():
        hint = p3s.encoder(
            *(t.to(param.device, param.dtype) for t in (tokens, grid, latent, latent_mask)),
        )
    return hint.to(comfy.model_management.intermediate_device())


def check_injection_settings(strength: float, start_percent: float, end_percent: float) -> None:
    """A finite ``strength`` and a non-empty window in [0, 1], checked before anything is encoded."""
    finite("strength", strength)
    window(start_percent, end_percent)


def check_region(region: torch.Tensor | None, region_feather: float = 0.0) -> tuple[torch.Tensor | None, float]:
    """The region as ``[M, H, W]`` in [0, 1] (or None) and the feather in pixels, or a clear error.

    Checked before anything is encoded; the mask count is checked against the latent batch when
    sampling starts, before its first step (our addition).
    """
    feather = check_feather(region_feather)
    if region is None:
        return None, feather
    return as_region_masks(region), feather


def end_of_run(run_weights: RunWeights):
    """An ``OUTER_SAMPLE`` wrapper that drops the run's cast weights when sampling ends, however it
    ends (the device holds them only while sampling)."""

    def wrapper(executor, *args, **kwargs):
        try:
            return executor(*args, **kwargs)
        finally:
            run_weights.clear()

    wrapper.run_weights = run_weights  # what it clears, for inspection
    return wrapper


def apply_p3s(
    model: comfy.model_patcher.ModelPatcher,
    p3s: P3SModel,
    hint: torch.Tensor,
    strength: float = 1.0,
    schedule: WeightSchedule | None = None,
    start_percent: float = 0.0,
    end_percent: float = 1.0,
    apply_to_uncond: bool = False,
    reference_mode: str = "cycle",
    region: torch.Tensor | None = None,
    region_feather: float = 0.0,
) -> comfy.model_patcher.ModelPatcher:
    """A patched clone of ``model`` that injects ``p3s`` (the input MODEL is not changed).

    ``region`` (a MASK, our addition): the injection acts only there, feathered by
    ``region_feather`` image pixels; None is the whole image, exactly as before the option. With a
    region the clone also carries a ``CALC_COND_BATCH`` wrapper (area conditioning's offsets) and an
    ``OUTER_SAMPLE`` wrapper (the mask count against the latent batch, before the first step).
    """
    base = check_base_model(model)
    check_injection_settings(strength, start_percent, end_percent)
    masks, feather = check_region(region, region_feather)
    if hint.dim() != 4 or hint.shape[1] != p3s.hint_conv.in_channels:
        raise P3SInputError(f"The hint must be [refs, {p3s.hint_conv.in_channels}, h, w]; got {tuple(hint.shape)}.")
    sigma_range = None
    if (start_percent, end_percent) != (0.0, 1.0):
        sampling = model.get_model_object("model_sampling")
        sigma_range = (
            float(sampling.percent_to_sigma(start_percent)),
            float(sampling.percent_to_sigma(end_percent)),
        )
    settings = InjectionSettings(float(strength), sigma_range, bool(apply_to_uncond), reference_mode)

    place_for_base(p3s, model)
    key = f"{STATE_KEY_PREFIX}_{uuid.uuid4().hex[:12]}"
    patched = model.clone()
    region_settings = None
    if masks is not None:
        areas = AreaLog()
        region_settings = RegionSettings(masks, feather, base.PIXELS_PER_LATENT, areas)
        wrappers = comfy.patcher_extension.WrappersMP
        patched.add_wrapper_with_key(wrappers.CALC_COND_BATCH, key, make_area_recorder(areas))
        patched.add_wrapper_with_key(wrappers.OUTER_SAMPLE, key, make_batch_check(masks.shape[0]))
    run_weights = RunWeights()
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, f"{key}_run", end_of_run(run_weights))
    patched.add_wrapper_with_key(
        comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL,
        key,
        make_diffusion_wrapper(p3s, hint.detach(), settings, schedule, key, region_settings, run_weights),
    )
    patched.set_model_attn1_output_patch(make_injection_patch("attn1", key))
    patched.set_model_attn2_output_patch(make_injection_patch("attn2", key))
    patched.set_additional_models(key, [p3s_patcher(p3s, model)])
    return patched


def p3s_patcher(p3s: P3SModel, model: comfy.model_patcher.ModelPatcher) -> comfy.model_patcher.ModelPatcher:
    """The one ``ModelPatcher`` over ``p3s`` (kept on the module) that ComfyUI loads and offloads.

    One patcher per P3S model, as ComfyUI's ControlNets do: a fresh patcher per application
    would die with its MODEL while the module lives on, which ComfyUI reports as a leak.
    """
    devices = (model.load_device, model.offload_device)
    unet = model.model.diffusion_model
    patcher = p3s.__dict__.get("_comfy_patcher")
    if (
        patcher is None
        or (patcher.load_device, patcher.offload_device) != devices
        or getattr(patcher, "shared_with", None) is not unet
    ):
        patcher = P3SModelPatcher(p3s, load_device=devices[0], offload_device=devices[1], shared_with=unet)
        p3s.__dict__["_comfy_patcher"] = patcher
    return patcher
