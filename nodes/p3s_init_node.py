"""``P3S Init``: an untrained P3S model (``P3S_MODEL``) from an SD1.5 or SDXL base MODEL."""

from __future__ import annotations

from comfy_api.latest import io

from ..p3s_core.model.injection_layers import DEFAULT_INJECTION_RANK
from ..p3s_core.model.shared_copy import DEFAULT_LORA_ALPHA, DEFAULT_LORA_RANK, SCOPES
from ..p3s_core.model.subject_encoder import DEFAULT_ENCODER_CONFIG
from .p3s_patching import clip_token_width, new_p3s_model
from .types import CATEGORY, P3SModelType, injection_rank_input, lora_inputs


class P3SInit(io.ComfyNode):
    """Copies the base U-Net into a new P3S model whose injection layers are all zero."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="P3SInit",
            display_name="P3S Init",
            category=f"{CATEGORY}/model",
            description="Create an untrained P3S model from an SD1.5 or SDXL base model: a trainable copy of its "
            "U-Net (only the part its scope trains is its own; the rest shares the base's weights), the "
            "subject encoder and zero-initialised injection layers. Applied as it is, it changes nothing; "
            "fine-tune it on your reference images first.",
            inputs=[
                io.Model.Input("model", tooltip="The SD1.5 or SDXL base model the P3S model will be used with."),
                io.ClipVision.Input(
                    "clip_vision",
                    optional=True,
                    tooltip="The CLIP vision model (ViT-L/14) the subject encoder will read; "
                    "sets the encoder's token width (1024 when absent).",
                ),
                io.Combo.Input(
                    "scope",
                    options=list(SCOPES),
                    default="full",
                    optional=True,
                    tooltip="What of the copy is the model's own and trainable: full = a whole U-Net (the paper), "
                    "attention = its attention layers, lora = low-rank adapters (our addition), injection = none "
                    "(only the zero layers and encoder).",
                ),
                *lora_inputs(),
                injection_rank_input(),
            ],
            outputs=[P3SModelType.Output("p3s_model", tooltip="The untrained P3S model, for P3S Fine-tune or Apply.")],
        )

    @classmethod
    def execute(
        cls,
        model,
        clip_vision=None,
        scope="full",
        lora_rank=DEFAULT_LORA_RANK,
        lora_alpha=DEFAULT_LORA_ALPHA,
        injection_rank=DEFAULT_INJECTION_RANK,
    ) -> io.NodeOutput:
        config = dict(DEFAULT_ENCODER_CONFIG)
        if clip_vision is not None:
            config["token_dim"] = clip_token_width(clip_vision)
        return io.NodeOutput(
            new_p3s_model(model, config, scope, int(lora_rank), float(lora_alpha), int(injection_rank))
        )
