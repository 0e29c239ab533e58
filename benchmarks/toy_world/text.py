"""The toy world's text encoder: one fixed random vector per word, no learning.

Each word's vector is drawn from a generator seeded by the word (CRC32) and the encoder seed,
so any word, including ones never seen in pretraining ("sks", "photo"), has a stable
embedding. Object and background colours use distinct words, so a bag of words is
unambiguous and no position embedding is needed. Prompts are padded to ``TOKENS`` with the
``<pad>`` vector; the empty prompt is all padding (the unconditional context for CFG).
"""

from __future__ import annotations

import zlib

import torch

TOKENS = 8
CONTEXT_DIM = 32


class WordEncoder:
    """``encode(prompts) -> [B, TOKENS, CONTEXT_DIM]``."""

    def __init__(self, seed: int = 0, dim: int = CONTEXT_DIM, tokens: int = TOKENS):
        self.seed, self.dim, self.tokens = seed, dim, tokens
        self._cache: dict[str, torch.Tensor] = {}

    def word(self, word: str) -> torch.Tensor:
        if word not in self._cache:
            gen = torch.Generator().manual_seed(zlib.crc32(word.encode()) * 1009 + self.seed)
            self._cache[word] = torch.randn(self.dim, generator=gen)
        return self._cache[word]

    def encode(self, prompts: list[str]) -> torch.Tensor:
        rows = []
        for prompt in prompts:
            words = prompt.split()
            if len(words) > self.tokens:
                raise ValueError(f"Prompt {prompt!r} has {len(words)} words; the toy encoder takes {self.tokens}.")
            words = words + ["<pad>"] * (self.tokens - len(words))
            rows.append(torch.stack([self.word(w) for w in words]))
        return torch.stack(rows)
