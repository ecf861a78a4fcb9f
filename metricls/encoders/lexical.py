"""LexicalBackbone: hashed word and char n-grams into a trainable EmbeddingBag (fastText-like)."""

from __future__ import annotations

import re
import zlib
from array import array
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from metricls.csr_keys import rows_of

_TOKEN = re.compile(r"[\w+#]+")
_MAX_TOKENS = 512  # words read per text: long descriptions add little past this
_CACHED_WORDS = 2_000_000  # words whose hashes are kept between calls
HASH_CHUNK = 64  # texts hashed together (their ids are sorted together: small chunks sort fast)
_INT64_BYTES = np.dtype(np.int64).itemsize  # a cached word's character hashes: bytes per hash
_CHAR_SEED = zlib.crc32(b"c:")  # a character n-gram's hash is CRC-32 of b"c:" + its UTF-8


@dataclass(frozen=True)
class Bags:
    """Per-item hashed feature ids in CSR form: item i owns ids[indptr[i]:indptr[i+1]]."""

    indptr: np.ndarray  # (n + 1,) int64
    ids: np.ndarray  # (nnz,) int64

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def take(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat ids and offsets of the rows `idx`, as `EmbeddingBag` wants them."""
        idx = np.asarray(idx, np.int64)
        starts = self.indptr[idx]
        lengths = self.indptr[idx + 1] - starts
        offsets = np.zeros(len(idx), np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        # position t of the flat ids reads ids[starts[row] + (t - offsets[row])]
        flat = self.ids[np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum()))]
        return torch.as_tensor(flat.astype(np.int64, copy=False)), torch.as_tensor(offsets)


class NgramHasher:
    """Maps a text to the bucket ids of its words, word n-grams and character n-grams."""

    def __init__(self, buckets: int, word_ngrams: int, char_ngrams: tuple[int, ...],
                 lowercase: bool = True) -> None:
        self.buckets = buckets
        self.word_ngrams = word_ngrams
        self.char_ngrams = tuple(char_ngrams)
        self.lowercase = lowercase
        self._hash: dict[str, int] = {}  # word -> its hash (a cache)
        self._chars: dict[str, bytes] = {}  # word -> its character n-grams' hashes (int64s)

    def _known(self, words: list[str]) -> tuple[dict[str, int], dict[str, bytes]]:
        """Word hashes and character n-gram hashes holding every word of `words`: the caches,
        filled with the new words while they hold fewer than `_CACHED_WORDS`."""
        new = {w for w in words if w not in self._hash}
        if not new:
            return self._hash, self._chars
        hashes = {w: zlib.crc32(b"w:" + w.encode()) for w in new}
        chars = {w: self._char_hashes(w) for w in new}
        if len(self._hash) + len(new) > _CACHED_WORDS:
            return self._hash | hashes, self._chars | chars
        self._chars.update(chars)  # first: a word in `_hash` is in `_chars` for other threads
        self._hash.update(hashes)
        return self._hash, self._chars

    def _char_hashes(self, word: str) -> bytes:
        """The hashes of the word's character n-grams, as the bytes of int64s: a chunk's
        words join into one array with one `bytes.join`."""
        padded = f"<{word}>"
        grams = {padded[i:i + n] for n in self.char_ngrams for i in range(len(padded) - n + 1)}
        grams.discard(padded)  # the whole word is already its own feature
        return array("q", [zlib.crc32(g.encode(), _CHAR_SEED) for g in grams]).tobytes()

    def ids(self, text: str) -> np.ndarray:
        """Unique bucket ids of one text (at least one id: an empty text maps to bucket 0)."""
        return self.bags([text]).ids

    def bags(self, texts: list[str]) -> Bags:
        """Hash every text; returns the CSR of their unique ids, sorted within each text.

        Texts are hashed `HASH_CHUNK` at a time: each text is only split into words (each
        word's hash and character n-grams are cached), and the word n-grams, the bucketing and
        the per-text de-duplication run as a few numpy operations over the chunk together.
        """
        if len(texts) <= HASH_CHUNK:
            return self._bags(texts)
        parts = [self._bags(texts[s:s + HASH_CHUNK]) for s in range(0, len(texts), HASH_CHUNK)]
        offsets = np.cumsum([0] + [len(p.ids) for p in parts[:-1]])
        indptr = np.concatenate([[0]] + [p.indptr[1:] + o for p, o in zip(parts, offsets)])
        return Bags(indptr=indptr.astype(np.int64), ids=np.concatenate([p.ids for p in parts]))

    def _bags(self, texts: list[str]) -> Bags:
        """`bags` of one chunk."""
        tokens: list[str] = []  # every text's words, one text after another
        n_words = np.zeros(len(texts), np.int64)
        distinct: list[str] = []  # each text's distinct words (for their character n-grams)
        n_distinct = np.zeros(len(texts), np.int64)
        for i, text in enumerate(texts):
            words = _TOKEN.findall(text.lower() if self.lowercase else text)[:_MAX_TOKENS]
            tokens += words
            n_words[i] = len(words)
            once = dict.fromkeys(words)
            distinct += once
            n_distinct[i] = len(once)
        hashes, char_hashes = self._known(distinct)
        flat = np.fromiter(map(hashes.__getitem__, tokens), np.int64, count=len(tokens))
        word_row = np.repeat(np.arange(len(texts)), n_words)
        chars = list(map(char_hashes.__getitem__, distinct))
        n_chars = np.fromiter(map(len, chars), np.int64, count=len(chars)) // _INT64_BYTES
        char_row = np.repeat(np.repeat(np.arange(len(texts)), n_distinct), n_chars)
        rows, parts = [word_row, char_row], [flat, np.frombuffer(b"".join(chars), np.int64)]
        mixed = flat.astype(np.uint64)
        for n in range(2, self.word_ngrams + 1):  # n-grams within one text only
            mixed = mixed[:-1] * np.uint64(1_000_003) + flat[n - 1:].astype(np.uint64)
            inside = word_row[:len(mixed)] == word_row[n - 1:]
            rows.append(word_row[:len(mixed)][inside])
            parts.append((mixed[inside] ^ np.uint64(n)).astype(np.int64) & 0x7FFFFFFFFFFF)
        empty = np.flatnonzero(n_words == 0)  # a text without words maps to bucket 0
        rows.append(empty)
        parts.append(np.zeros(len(empty), np.int64))
        indptr, ids, _ = rows_of(np.concatenate(rows), np.concatenate(parts) % self.buckets,
                                 len(texts), self.buckets)
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
        flat, offsets = flat.to(device), offsets.to(device)
        if not (self.training and torch.is_grad_enabled()):
            return self.bag(flat, offsets)  # (B, dim)
        # training: the batch's distinct rows are looked up once, so the sparse gradient
        # holds each row once (the bag's own gradient repeats a row per use, and the
        # optimizer's coalescing of those repeats was most of a training step)
        rows, inverse = torch.unique(flat, return_inverse=True)
        table = F.embedding(rows, self.bag.weight, sparse=True)
        return F.embedding_bag(inverse, table, offsets, mode="mean")  # (B, dim)
