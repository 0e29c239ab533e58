"""ComfyUI nodes of the P3S pack: thin adapters over ``p3s_core``."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .attention_nodes import P3SAttentionMaps, P3SAttentionOverlays
from .example_inputs import install_example_inputs
from .finetune_node import P3SFineTune
from .framing_node import P3SFrameSubject
from .inpaint_node import P3SInpaint
from .loader_node import P3SLoaderNode
from .model_folder import register_eval_folder, register_p3s_folder
from .p3s_apply_node import P3SApply
from .p3s_init_node import P3SInit
from .points_node import P3SPointsNode
from .rngr_mask_node import P3SRngrMask
from .schedule_node import P3SScheduleNode
from .subject_score_node import P3SSubjectScore


class P3SExtension(ComfyExtension):
    """Registers every node of the pack."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [
            P3SPointsNode,
            P3SRngrMask,
            P3SInpaint,
            P3SFrameSubject,
            P3SScheduleNode,
            P3SLoaderNode,
            P3SInit,
            P3SApply,
            P3SFineTune,
            P3SAttentionMaps,
            P3SAttentionOverlays,
            P3SSubjectScore,
        ]


async def comfy_entrypoint() -> P3SExtension:
    """ComfyUI's V3 entry point for custom node packs."""
    register_p3s_folder()
    register_eval_folder()
    install_example_inputs()
    return P3SExtension()
