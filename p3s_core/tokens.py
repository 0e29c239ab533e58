"""Which context columns of a prompt belong to a word, from token ids (no tokenizer import).

The caller tokenizes (ComfyUI's CLIP): the prompt as one flat id sequence (the text encoder's
77-token chunks concatenated, as the conditioning is) and each word on its own, without its
start/end/padding tokens. A word may be several tokens ("sks" -> "sk", "s</w>"); every
occurrence of the whole sequence counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .attention_maps import TokenGroup
from .errors import P3SInputError


def parse_words(text: str) -> list[str]:
    """Comma-separated words, stripped, empty entries and repeats dropped, order kept."""
    words: list[str] = []
    for part in text.split(","):
        word = part.strip()
        if word and word not in words:
            words.append(word)
    return words


def find_sequence(prompt_ids: Sequence[int], word_ids: Sequence[int]) -> list[int]:
    """Columns of every occurrence of ``word_ids`` in ``prompt_ids`` (all its tokens, in order)."""
    n = len(word_ids)
    if n == 0:
        return []
    columns: list[int] = []
    for start in range(len(prompt_ids) - n + 1):
        if list(prompt_ids[start : start + n]) == list(word_ids):
            columns.extend(range(start, start + n))
    return columns


def token_groups(prompt_ids: Sequence[int], word_ids: Mapping[str, Sequence[int]]) -> tuple[TokenGroup, ...]:
    """One :class:`TokenGroup` per word (in the given order), or a ``P3SInputError`` naming missing words."""
    if not word_ids:
        raise P3SInputError('Name at least one word of the prompt to map, e.g. "sks, dog".')
    groups, missing = [], []
    for word, ids in word_ids.items():
        columns = find_sequence(prompt_ids, ids)
        if columns:
            groups.append(TokenGroup(word, tuple(columns)))
        else:
            missing.append(word)
    if missing:
        raise P3SInputError(
            f"{', '.join(repr(w) for w in missing)} not found in the prompt: give words that the prompt contains "
            "(the same prompt as the positive CLIP Text Encode), separated by commas."
        )
    return tuple(groups)
