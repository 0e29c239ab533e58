"""ComfyUI glue for the attention maps: prompt tokenization and patching a MODEL to capture.

:func:`attach_attention_capture` clones the MODEL and adds, under closures only (ComfyUI
deep-copies ``model_options`` on clone): an attn2 replace patch on the frozen U-Net's layer,
the same patch for the P3S copy (through ``COPY_PATCHES_REPLACE_KEY``, which P3S Apply's
wrapper hands to the copy), and an ``OUTER_SAMPLE`` wrapper that clears the recorder per run.
"""

from __future__ import annotations

import uuid

import comfy.ldm.modules.attention
import comfy.model_patcher
import comfy.patcher_extension

from ..p3s_core.errors import P3SInputError
from ..p3s_core.inspection.attention_maps import AttentionRecorder, TokenGroup, make_attn2_capture, make_reset_wrapper
from ..p3s_core.inspection.tokens import token_groups
from ..p3s_core.sampling.injection import COPY_PATCHES_REPLACE_KEY

WRAPPER_KEY_PREFIX = "p3s_attention"


def _clip_l_ids(clip, text: str) -> list[list]:
    """The CLIP-L token ids per chunk. SDXL's CLIP adds a ``g`` encoder whose chunks hold the same
    columns (its context is both side by side in width), so ``l`` gives the columns of both."""
    tokens = clip.tokenize(text)
    if not isinstance(tokens, dict) or "l" not in tokens or not set(tokens) <= {"l", "g"}:
        kinds = sorted(tokens) if isinstance(tokens, dict) else type(tokens).__name__
        raise P3SInputError(
            f"Attention maps need an SD1.5 or SDXL CLIP (an 'l' text encoder, with SDXL's 'g' beside it); "
            f"this CLIP has {kinds}."
        )
    if "g" in tokens and [len(c) for c in tokens["g"]] != [len(c) for c in tokens["l"]]:
        raise P3SInputError("This CLIP's 'l' and 'g' token chunks differ in length: its columns cannot be matched.")
    return [[tok[0] if isinstance(tok[0], int) else -1 for tok in chunk] for chunk in tokens["l"]]


def prompt_token_chunks(clip, prompt: str) -> list[list[int]]:
    """The prompt's token ids per 77-token chunk, in conditioning column order."""
    return _clip_l_ids(clip, prompt)


def special_token_ids(clip) -> set[int]:
    """The start, end and padding token ids: all that an empty prompt holds."""
    return {tok for chunk in _clip_l_ids(clip, "") for tok in chunk}


def word_token_ids(clip, word: str) -> list[int]:
    """A word's own token ids, without the start, end and padding tokens."""
    special = special_token_ids(clip)
    return [tok for chunk in _clip_l_ids(clip, word) for tok in chunk if tok not in special]


def word_groups(clip, prompt: str, words: list[str]) -> tuple[TokenGroup, ...]:
    """The context columns of each of ``words`` in ``prompt`` (a word may span two chunks)."""
    return token_groups(
        prompt_token_chunks(clip, prompt), {w: word_token_ids(clip, w) for w in words}, special_token_ids(clip)
    )


def _attention_now(*args, **kwargs):
    # Looked up per call: ComfyUI picks its attention function at start-up.
    return comfy.ldm.modules.attention.optimized_attention(*args, **kwargs)


def attach_attention_capture(
    model: comfy.model_patcher.ModelPatcher, recorder: AttentionRecorder
) -> comfy.model_patcher.ModelPatcher:
    """A clone of ``model`` that records the frozen U-Net's and the P3S copy's maps into ``recorder``."""
    block = recorder.settings.block
    patched = model.clone()
    replace = patched.model_options["transformer_options"].get("patches_replace", {}).get("attn2", {})
    exact = block if len(block) == 3 else (*block, 0)  # ComfyUI looks up (block, id, index) first
    previous = replace.get(exact, replace.get(block[:2]))
    patched.set_model_attn2_replace(make_attn2_capture(recorder, "frozen", _attention_now, previous), *block)
    options = patched.model_options["transformer_options"]  # a fresh dict after set_model_attn2_replace
    for_copy = dict(options.get(COPY_PATCHES_REPLACE_KEY, {}))
    for_copy["attn2"] = {**for_copy.get("attn2", {}), block: make_attn2_capture(recorder, "copy", _attention_now)}
    options[COPY_PATCHES_REPLACE_KEY] = for_copy
    patched.add_wrapper_with_key(
        comfy.patcher_extension.WrappersMP.OUTER_SAMPLE,
        f"{WRAPPER_KEY_PREFIX}_{uuid.uuid4().hex[:12]}",
        make_reset_wrapper(recorder),
    )
    return patched
