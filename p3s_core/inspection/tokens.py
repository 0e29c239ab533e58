"""Which context columns of a prompt belong to a word, from token ids (no tokenizer import).

The caller tokenizes (ComfyUI's CLIP): the prompt as its 77-token chunks, in conditioning
column order (the chunks' columns follow each other, as the conditioning's do), and each word
on its own, without its start/end/padding tokens. A word may be several tokens ("sks" -> "sk",
"s</w>"); every occurrence of the whole sequence counts.

ComfyUI splits a long prompt at any token, so a word may begin in one chunk and end in the
next, with the first chunk's end/padding and the next chunk's start token between its parts.
The search therefore runs over the prompt's own tokens only: each chunk without its leading
start token and its trailing end/padding tokens (``special``), their columns kept.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from ..errors import P3SInputError
from ..validation import excerpt
from .attention_maps import TokenGroup


def parse_words(text: str) -> list[str]:
    """Comma-separated words, stripped, empty entries and repeats dropped, order kept."""
    words: list[str] = []
    for part in text.split(","):
        word = part.strip()
        if word and word not in words:
            words.append(word)
    return words


def find_sequence(prompt_ids: Sequence[int], word_ids: Sequence[int]) -> list[int]:
    """Positions of every occurrence of ``word_ids`` in ``prompt_ids`` (all its tokens, in order)."""
    n = len(word_ids)
    if n == 0:
        return []
    columns: list[int] = []
    for start in range(len(prompt_ids) - n + 1):
        if list(prompt_ids[start : start + n]) == list(word_ids):
            columns.extend(range(start, start + n))
    return columns


def content_tokens(chunks: Sequence[Sequence[int]], special: Collection[int]) -> tuple[list[int], list[int]]:
    """``(ids, columns)`` of the prompt's own tokens: each chunk without its first token when that
    is special (the start token) and without its trailing special tokens (end, padding)."""
    ids: list[int] = []
    columns: list[int] = []
    offset = 0
    for chunk in chunks:
        begin = 1 if chunk and chunk[0] in special else 0
        end = len(chunk)
        while end > begin and chunk[end - 1] in special:
            end -= 1
        ids.extend(chunk[begin:end])
        columns.extend(range(offset + begin, offset + end))
        offset += len(chunk)
    return ids, columns


def token_groups(
    prompt_chunks: Sequence[Sequence[int]],
    word_ids: Mapping[str, Sequence[int]],
    special: Collection[int] = (),
) -> tuple[TokenGroup, ...]:
    """One :class:`TokenGroup` per word (in the given order), or a ``P3SInputError`` naming missing words.

    ``prompt_chunks``: the prompt's token ids per tokenizer chunk; ``special``: the start, end and
    padding token ids, skipped (see the module docstring).
    """
    if not word_ids:
        raise P3SInputError('Name at least one word of the prompt to map, e.g. "sks, dog".')
    ids, columns = content_tokens(prompt_chunks, set(special))
    groups, missing = [], []
    for word, word_tokens in word_ids.items():
        found = [columns[i] for i in find_sequence(ids, [t for t in word_tokens if t not in special])]
        if found:
            groups.append(TokenGroup(word, tuple(found)))
        else:
            missing.append(word)
    if missing:
        raise P3SInputError(
            f"{', '.join(excerpt(w, 40) for w in missing[:5])} not found in the prompt: give words that the prompt "
            "contains (the same prompt as the positive CLIP Text Encode), separated by commas."
        )
    return tuple(groups)
