"""``P3S Attention Maps`` (capture while sampling) and ``P3S Attention Overlays`` (draw them)."""

from __future__ import annotations

import torch
from comfy_api.latest import io, ui

from ..p3s_core.bases.registry import attention_map_layers
from ..p3s_core.bases.unet_sites import last_layer_key
from ..p3s_core.errors import P3SInputError
from ..p3s_core.inspection.attention_maps import DEFAULT_BLOCK, DEFAULT_MAX_SIDE, AttentionRecorder, CaptureSettings
from ..p3s_core.inspection.attention_overlay import attention_overlays, label_images, parse_step_items
from ..p3s_core.inspection.loss_plot import plot_step_values
from ..p3s_core.inspection.tokens import parse_words
from ..p3s_core.training.losses import NORMALISATIONS
from ..p3s_core.validation import MAX_PROMPT_CHARS, MAX_WORDS_CHARS, text_length
from .attention_patching import attach_attention_capture, word_groups
from .p3s_patching import check_base_model
from .types import CATEGORY_INSPECT, P3SAttentionType

LAYERS = attention_map_layers()
PLOT_WIDTH, PLOT_HEIGHT = 512, 320


class P3SAttentionMaps(io.ComfyNode):
    """Patches a MODEL to record cross-attention maps of the frozen U-Net and the P3S copy."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="P3SAttentionMaps",
            display_name="P3S Attention Maps",
            category=CATEGORY_INSPECT,
            description="Record where the frozen U-Net and the P3S copy attend, for chosen prompt words, while "
            "sampling (cond rows only), and L_ac per step. Connect the MODEL output to the sampler and the "
            "attention output to P3S Attention Overlays. The sampled image does not change.",
            inputs=[
                io.Model.Input(
                    "model",
                    tooltip="A plain SD1.5 or SDXL MODEL, or one from P3S Apply (then the copy is mapped too).",
                ),
                io.Clip.Input("clip", tooltip="The CLIP that encodes the positive prompt (to find the words' tokens)."),
                io.String.Input(
                    "prompt",
                    multiline=True,
                    default="a photo of sks dog",
                    tooltip="The positive prompt, exactly as given to CLIP Text Encode.",
                ),
                io.String.Input(
                    "words", default="sks, dog", tooltip="Comma-separated words of the prompt to map (one map each)."
                ),
                io.Combo.Input(
                    "layer",
                    options=LAYERS,
                    default=f"{DEFAULT_BLOCK[0]}_{DEFAULT_BLOCK[1]}",
                    tooltip="Cross-attention layer (a ComfyUI block; in a block of several transformer blocks, its "
                    "last). The last one, the layer L_ac uses: output_11 on SD1.5, output_5 on SDXL.",
                ),
                io.Combo.Input(
                    "normalisation",
                    options=list(NORMALISATIONS),
                    default="mean",
                    tooltip="L_ac's divisor: mean (default) or the paper's literal sum (makes L_ac tiny).",
                ),
                io.Int.Input(
                    "max_side",
                    default=DEFAULT_MAX_SIDE,
                    min=8,
                    max=256,
                    tooltip="Stored maps are pooled to at most this many pixels a side (memory stays bounded).",
                ),
            ],
            outputs=[
                io.Model.Output("captured_model", tooltip="Connect to the sampler."),
                P3SAttentionType.Output("attention", tooltip="Connect to P3S Attention Overlays (after sampling)."),
            ],
        )

    @classmethod
    def execute(cls, model, clip, prompt, words, layer, normalisation, max_side) -> io.NodeOutput:
        text_length("prompt", prompt, MAX_PROMPT_CHARS)
        names = parse_words(text_length("words", words, MAX_WORDS_CHARS))
        groups = word_groups(clip, prompt, names)
        settings = CaptureSettings(
            block=capture_layer(model, layer), groups=groups, max_side=max_side, normalisation=normalisation
        )
        recorder = AttentionRecorder(settings)
        return io.NodeOutput(attach_attention_capture(model, recorder), recorder)


def capture_layer(model, layer: str) -> tuple:
    """The attn2 layer key of ``layer`` (a block key, ``output_11``) on the MODEL's base: ``(block, id)``, or
    ``(block, id, index)`` of the block's last transformer block where it holds several (SDXL).

    A layer the base does not have is refused with the base's layers (our addition).
    """
    base = check_base_model(model)
    if layer not in base.ATTENTION_MAP_LAYERS:
        raise P3SInputError(
            f"{base.DISPLAY_NAME} has no cross-attention layer {layer!r}: choose one of "
            f"{', '.join(base.ATTENTION_MAP_LAYERS)} (the last, the layer L_ac uses: "
            f"{'_'.join(map(str, base.LAST_CROSS_ATTENTION))})."
        )
    name, _, number = layer.rpartition("_")
    return last_layer_key(base.check_layout(model.model.diffusion_model), (name, int(number)))


class P3SAttentionOverlays(io.ComfyNode):
    """Draws the recorded maps over the generated images and plots L_ac per step."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="P3SAttentionOverlays",
            display_name="P3S Attention Overlays",
            category=CATEGORY_INSPECT,
            description="Overlays of the captured maps on the generated images: the frozen U-Net's, the copy's "
            "(same colour scale) and copy - frozen (red: copy attends more, blue: less). One image per "
            "sample x word x step item. Plus a plot of L_ac per sampling step (gaps: the copy did not run).",
            inputs=[
                P3SAttentionType.Input("attention", tooltip="From P3S Attention Maps."),
                io.Image.Input("images", tooltip="The decoded images of the sampling run that was captured."),
                io.String.Input(
                    "steps",
                    default="all",
                    tooltip='"all" averages every step; or 1-based steps and ranges, e.g. "1, 10, 15-20".',
                ),
            ],
            outputs=[
                io.Image.Output("frozen_overlays", tooltip="Where the frozen U-Net attends."),
                io.Image.Output("copy_overlays", tooltip="Where the P3S copy attends (plain images if it never ran)."),
                io.Image.Output("difference_overlays", tooltip="copy - frozen: red more, blue less."),
                io.Image.Output("lac_plot", tooltip="L_ac per sampling step."),
            ],
        )

    @classmethod
    def execute(cls, attention: AttentionRecorder, images: torch.Tensor, steps: str) -> io.NodeOutput:
        if attention.maps("frozen") is None:
            raise P3SInputError(
                "No attention maps were captured: sample with the MODEL from P3S Attention Maps before this node, "
                "with an SD1.5 or SDXL model that has the chosen layer."
            )
        items = parse_step_items(steps, attention.num_steps)
        outputs: dict[str, list[torch.Tensor]] = {"frozen": [], "copy": [], "difference": []}
        labels: list[str] = []
        per_item = [(label, attention.maps("frozen", s), attention.maps("copy", s)) for label, s in items]
        samples = per_item[0][1].shape[0]
        if images.shape[0] != samples:
            raise P3SInputError(
                f"{images.shape[0]} images but {samples} sampled latents were captured: give the decoded batch "
                "of the captured sampling run."
            )
        for b in range(samples):
            for g, word in enumerate(attention.labels):
                for label, frozen, copy in per_item:
                    overlays = attention_overlays(images[b], frozen[b, g], None if copy is None else copy[b, g])
                    for role in outputs:
                        outputs[role].append(getattr(overlays, role)[0])
                    labels.append(f"'{word}' {label}")
        results = [label_images(torch.stack(outputs[role]), [f"{role} {text}" for text in labels]) for role in outputs]
        curve = attention.loss_curve()
        title = f"L_ac ({attention.settings.normalisation}) at {'_'.join(map(str, attention.settings.block))}"
        plot = torch.from_numpy(plot_step_values(curve, title, PLOT_WIDTH, PLOT_HEIGHT)).unsqueeze(0)
        preview = torch.cat([*(r[:1] for r in results)], dim=2)
        return io.NodeOutput(*results, plot, ui=ui.PreviewImage(preview, cls=cls))
