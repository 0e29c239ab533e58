"""Whole words in prompts: find and remove an identifier such as ``sks`` (shared by training and scoring)."""

from __future__ import annotations

import re


def _word_pattern(word: str) -> str:
    return rf"(?<!\w){re.escape(word)}(?!\w)"


def has_word(text: str, word: str) -> bool:
    """Whether ``word`` (stripped, non-empty) is a whole word of ``text``: ``sks`` is in ``"a sks dog"``,
    not in ``"a sksdog"``."""
    word = word.strip()
    return bool(word) and re.search(_word_pattern(word), text) is not None


def without_word(text: str, word: str) -> str:
    """``text`` with every whole-word ``word`` removed and the spaces closed up.

    ``"a photo of sks dog"`` without ``sks`` is ``"a photo of dog"``; an empty ``word`` or one that is
    not in ``text`` gives ``text`` with its spaces normalised.
    """
    word = word.strip()
    removed = re.sub(_word_pattern(word), " ", text) if word else text
    return " ".join(removed.split())
