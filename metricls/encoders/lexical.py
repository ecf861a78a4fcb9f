"""LexicalBackbone: hashed word and char n-grams into a trainable EmbeddingBag (fastText-like)."""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

_TOKEN = re.compile(r"[\w+#]+")
_MAX_TOKENS = 512  # words read per text: long descriptions add little past this


@dataclass(frozen=True)
class Bags:
    """Per-item hashed feature ids in CSR form: item i owns ids[indptr[i]:indptr[i+1]]."""

    indptr: np.ndarray  # (n + 1,) int64
    ids: np.ndarray  # (nnz,) int64

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def take(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat ids and offsets of the rows `idx`, as `EmbeddingBag` wants them."""
        starts, ends = self.indptr[idx], self.indptr[idx + 1]
        lengths = ends - starts
        flat = np.concatenate([self.ids[s:e] for s, e in zip(starts, ends)]) if len(idx) else []
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(idx) else []
        return torch.as_tensor(np.asarray(flat, dtype=np.int64)), torch.as_tensor(
            np.asarray(offsets, dtype=np.int64))


class NgramHasher:
    """Maps a text to the bucket ids of its words, word n-grams and character n-grams."""

    def __init__(self, buckets: int, word_ngrams: int, char_ngrams: tuple[int, ...],
                 lowercase: bool = True) -> None:
        self.buckets = buckets
        self.word_ngrams = word_ngrams
        self.char_ngrams = tuple(char_ngrams)
        self.lowercase = lowercase
        self._words: dict[str, tuple[int, np.ndarray]] = {}

    def _word(self, word: str) -> tuple[int, np.ndarray]:
        hit = self._words.get(word)
        if hit is None:
            h = zlib.crc32(b"w:" + word.encode())
            padded = f"<{word}>"
            grams = {padded[i:i + n] for n in self.char_ngrams for i in range(len(padded) - n + 1)}
            grams.discard(padded)  # the whole word is already its own feature
            chars = np.fromiter((zlib.crc32(b"c:" + g.encode()) for g in grams), dtype=np.int64,
                                count=len(grams))
            hit = (h, chars)
            if len(self._words) < 2_000_000:
                self._words[word] = hit
        return hit

    def ids(self, text: str) -> np.ndarray:
        """Unique bucket ids of one text (at least one id: an empty text maps to bucket 0)."""
        text = text.lower() if self.lowercase else text
        tokens = _TOKEN.findall(text)[:_MAX_TOKENS]
        if not tokens:
            return np.zeros(1, dtype=np.int64)
        hits = [self._word(t) for t in tokens]
        words = np.array([h for h, _ in hits], dtype=np.int64)
        parts = [words] + [c for _, c in hits]
        mixed = words.astype(np.uint64)
        for n in range(2, self.word_ngrams + 1):
            if len(words) < n:
                break
            mixed = mixed[:-1] * np.uint64(1_000_003) + words[n - 1:].astype(np.uint64)
            parts.append((mixed ^ np.uint64(n)).astype(np.int64) & 0x7FFFFFFFFFFF)
        return np.unique(np.concatenate(parts) % self.buckets)

    def bags(self, texts: list[str]) -> Bags:
        """Hash every text; returns the CSR of their ids."""
        rows = [self.ids(t) for t in texts]
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        ids = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        return Bags(indptr=indptr, ids=ids)


class LexicalBackbone(nn.Module):
    """Trainable bag of hashed n-grams; mean of their vectors, one per text.

    Args:
        dim: output dimension.
        buckets: hash buckets (rows of the embedding table).
        word_ngrams: longest word n-gram.
        char_ngrams: character n-gram lengths taken inside each word.
        lowercase: lowercase texts before hashing.
    """

    name = "lexical"
    trainable = True
    needs = "texts"

    def __init__(self, dim: int = 128, buckets: int = 262_144, word_ngrams: int = 2,
                 char_ngrams: tuple[int, ...] = (3,), lowercase: bool = True) -> None:
        super().__init__()
        self.config = {"dim": dim, "buckets": buckets, "word_ngrams": word_ngrams,
                       "char_ngrams": list(char_ngrams), "lowercase": lowercase}
        self.out_dim = dim
        self.hasher = NgramHasher(buckets, word_ngrams, tuple(char_ngrams), lowercase)
        self.bag = nn.EmbeddingBag(buckets, dim, mode="mean", sparse=True)
        nn.init.normal_(self.bag.weight, std=0.1)

    def prepare(self, texts: list[str], *, cache: bool = False) -> Bags:
        """Hash the texts (cheap; `cache` is accepted for a uniform interface)."""
        return self.hasher.bags(texts)

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        flat, offsets = batch
        device = self.bag.weight.device
        return self.bag(flat.to(device), offsets.to(device))  # (B, dim)
