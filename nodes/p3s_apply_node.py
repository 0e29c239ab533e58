"""``P3S Apply``: patch a MODEL so that sampling injects a P3S model's subject."""

from __future__ import annotations

from comfy_api.latest import io

from ..p3s_core.model.model_file import P3SModelFile
from ..p3s_core.sampling.injection import REFERENCE_MODES
from ..p3s_core.sampling.regions import MAX_FEATHER
from .p3s_patching import (
    apply_p3s,
    check_base_model,
    check_injection_settings,
    check_reference_batches,
    check_region,
    encode_hint,
    p3s_model_from_file,
)
from .types import CATEGORY_APPLY, P3SModelType, P3SScheduleType


class P3SApply(io.ComfyNode):
    """Runs the P3S copy beside the frozen U-Net and adds its attention states to it."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="P3SApply",
            display_name="P3S Apply",
            category=CATEGORY_APPLY,
            description="Apply a P3S model to an SD1.5 or SDXL MODEL: the copy sees the noisy latent plus the "
            "reference hint and its self/cross-attention outputs are added to the model's at every "
            "transformer block, scaled by strength x schedule. Composes with LoRAs, ControlNets and "
            "other patches; the input MODEL is not changed.",
            inputs=[
                io.Model.Input(
                    "model", tooltip="The SD1.5 or SDXL MODEL to patch (it is not changed; the output is a copy)."
                ),
                P3SModelType.Input("p3s_model", tooltip="The subject model from P3S Fine-tune, Loader or Init."),
                io.Image.Input("reference_images", tooltip="The cleaned (inpainted) reference images."),
                io.Mask.Input("subject_mask", tooltip="One subject mask per reference image (or one for all)."),
                io.Vae.Input("vae", tooltip="The base model's VAE: encodes the reference images into the hint."),
                io.ClipVision.Input("clip_vision", tooltip="The CLIP vision model the P3S model was made with."),
                io.Float.Input(
                    "strength",
                    default=1.0,
                    min=-10.0,
                    max=10.0,
                    step=0.01,
                    tooltip="Multiplies the injected attention states; 0 samples like the plain model.",
                ),
                P3SScheduleType.Input(
                    "schedule",
                    optional=True,
                    tooltip="Weight over denoising progress; constant 1 when absent.",
                ),
                io.Float.Input(
                    "start_percent",
                    default=0.0,
                    min=0.0,
                    max=1.0,
                    step=0.001,
                    tooltip="Inject only from this share of the sampling on (0 = first step), like ControlNet's.",
                ),
                io.Float.Input(
                    "end_percent",
                    default=1.0,
                    min=0.0,
                    max=1.0,
                    step=0.001,
                    tooltip="Inject only up to this share of the sampling (1 = last step), like ControlNet's.",
                ),
                io.Boolean.Input(
                    "apply_to_uncond",
                    default=False,
                    tooltip="Also inject into the negative (uncond) pass; off = copy runs on cond rows only.",
                ),
                io.Combo.Input(
                    "reference_mode",
                    options=list(REFERENCE_MODES),
                    default="cycle",
                    tooltip="cycle: sample i uses reference i mod count; mean: the mean of all hints.",
                ),
                io.Mask.Input(
                    "region",
                    optional=True,
                    tooltip="Where this subject goes: the injection acts only inside the mask (image or latent "
                    "size, resized; one mask for all samples or one per sample). Absent = the whole image. "
                    "Chain one P3S Apply per subject, each with its own region.",
                ),
                io.Int.Input(
                    "region_feather",
                    default=0,
                    min=0,
                    max=MAX_FEATHER,
                    step=1,
                    optional=True,
                    tooltip="Soft edge of the region in image pixels: the injection fades from full to none "
                    "over this width, centred on the mask's edge. 0 = a hard edge.",
                ),
            ],
            outputs=[io.Model.Output(tooltip="The patched MODEL; connect to the sampler.")],
        )

    @classmethod
    def execute(
        cls,
        model,
        p3s_model,
        reference_images,
        subject_mask,
        vae,
        clip_vision,
        strength,
        start_percent,
        end_percent,
        apply_to_uncond,
        reference_mode,
        schedule=None,
        region=None,
        region_feather=0,
    ) -> io.NodeOutput:
        check_base_model(model)  # every check runs before the model is rebuilt or anything is encoded
        check_injection_settings(strength, start_percent, end_percent)
        check_reference_batches(reference_images, subject_mask)
        check_region(region, region_feather)
        if isinstance(p3s_model, P3SModelFile):  # from P3S Loader: rebuild it on this base model
            p3s_model = p3s_model_from_file(model, p3s_model.tensors, p3s_model.info.config)
        hint = encode_hint(p3s_model, reference_images, subject_mask, vae, clip_vision, model)
        patched = apply_p3s(
            model,
            p3s_model,
            hint,
            strength=strength,
            schedule=schedule,
            start_percent=start_percent,
            end_percent=end_percent,
            apply_to_uncond=apply_to_uncond,
            reference_mode=reference_mode,
            region=region,
            region_feather=region_feather,
        )
        return io.NodeOutput(patched)
