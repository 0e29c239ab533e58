"""Custom ComfyUI socket types of the pack."""

from comfy_api.latest import io

from ..p3s_core.model.injection_layers import DEFAULT_INJECTION_RANK, MAX_INJECTION_RANK
from ..p3s_core.model.shared_copy import DEFAULT_LORA_ALPHA, DEFAULT_LORA_RANK

CATEGORY = "P3S"
CATEGORY_SELECT = f"{CATEGORY}/select"
CATEGORY_APPLY = f"{CATEGORY}/apply"
CATEGORY_MODEL = f"{CATEGORY}/model"

# p3s_core.selection.points.P3SPoints: one normalised point set per reference image.
P3SPointsType = io.Custom("P3S_POINTS")
# p3s_core.sampling.schedule.WeightSchedule: injection weight over denoising progress.
P3SScheduleType = io.Custom("P3S_SCHEDULE")
# p3s_core.model.p3s_model.P3SModel (from P3S Init) or p3s_core.model.model_file.P3SModelFile (from P3S Loader).
P3SModelType = io.Custom("P3S_MODEL")
CATEGORY_INSPECT = f"{CATEGORY}/inspect"
# p3s_core.inspection.attention_maps.AttentionRecorder: cross-attention maps and L_ac captured while sampling.
P3SAttentionType = io.Custom("P3S_ATTENTION")


def lora_inputs() -> list:
    """The optional rank and alpha inputs of scope ``lora`` (P3S Init and P3S Fine-tune)."""
    return [
        io.Int.Input(
            "lora_rank",
            default=DEFAULT_LORA_RANK,
            min=1,
            max=1024,
            optional=True,
            tooltip="Rank of the low-rank adapters of scope lora (not used by the other scopes).",
        ),
        io.Float.Input(
            "lora_alpha",
            default=DEFAULT_LORA_ALPHA,
            min=0.01,
            max=4096.0,
            step=0.01,
            optional=True,
            tooltip="LoRA scale alpha of scope lora: the adapters add up(down(x)) * alpha / rank.",
        ),
    ]


def injection_rank_input() -> io.Int.Input:
    """The optional rank of a new model's injection layers (P3S Init and P3S Fine-tune)."""
    return io.Int.Input(
        "injection_rank",
        default=DEFAULT_INJECTION_RANK,
        min=-1,
        max=MAX_INJECTION_RANK,
        optional=True,
        tooltip="Rank of the 32 zero-initialised injection layers of a new model (our addition). -1 = the "
        "pack's rank, 64, in every scope: a scope-injection file is 8 MB instead of 49 MB, and low-rank layers "
        "train at 3x the learning rate, which kept the subject's identity in the toy world. 0 = full C x C "
        "layers (the paper's). A model given to continue_from keeps its own.",
    )
