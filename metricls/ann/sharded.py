"""ShardedIndex: a FAISS index split into shards over consecutive rows, one file each.

The shards are ordinary metricls FAISS indexes (flat, hnsw or ivf, the same parameters each)
over row blocks 0..n1-1, n1..n2-1, ...; `faiss.IndexShards` searches them in parallel threads
and merges the results, adding each shard's row offset to its ids, so ids are row positions as
with one index. Each shard is saved as its own index folder (``shard-000/faiss.index`` with its
``backend.json``), loadable alone, so shards can be copied to and served by separate machines.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from metricls.ann.base import AnnIndex, check_positive_int
from metricls.ann.faiss_index import FaissIndex, FlatIndex, HnswIndex, IvfIndex
from metricls.ann.faiss_lib import faiss
from metricls.errors import ArtifactError, InputError

SHARDABLE: dict[str, type[FaissIndex]] = {cls.backend: cls for cls in
                                          (FlatIndex, HnswIndex, IvfIndex)}


def shard_folder(folder: Path, i: int) -> Path:
    """Where shard `i` of a sharded index folder lives."""
    return folder / f"shard-{i:03d}"


class ShardedIndex(AnnIndex):
    """`shards` FAISS indexes of backend `base` (built with `base_params`) searched as one.

    Search parameters (e.g. ``nprobe`` for ivf) are those of `base` and apply to every shard.
    `add` appends to the last shard; `remove` is not supported.
    """

    backend = "sharded"
    default_params: ClassVar[dict[str, Any]] = {"base": "flat", "shards": 2, "base_params": {}}

    def __init__(self, dim: int, **params: Any) -> None:
        super().__init__(dim, **params)
        self._parts: list[FaissIndex] = []
        self._shards: Any = None  # faiss.IndexShards over the parts' FAISS indexes

    @property
    def ntotal(self) -> int:
        """Number of vectors in all shards."""
        return sum(part.ntotal for part in self._parts)

    @property
    def parts(self) -> tuple[FaissIndex, ...]:
        """The shards, in row order."""
        return tuple(self._parts)

    def set_search_params(self, **params: Any) -> None:
        """Change `base`'s search parameters on every shard."""
        valid = SHARDABLE[self.params["base"]].search_param_names
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise InputError(f"sharded index: {unknown} are not search parameters of "
                             f"{self.params['base']!r}; valid: {list(valid)}")
        kept = self.params["base_params"]
        self.params["base_params"] = {**kept, **params}
        try:
            self._check_params()
        except InputError:
            self.params["base_params"] = kept
            raise
        for part in self._parts:
            part.set_search_params(**params)

    def search_param_grid(self, k: int) -> list[dict[str, Any]]:
        """The grid of the first shard (the shards are alike)."""
        return self._parts[0].search_param_grid(k) if self._parts else []

    def memory_bytes(self) -> int:
        """Bytes of all shards."""
        return sum(part.memory_bytes() for part in self._parts)

    def copy(self) -> ShardedIndex:
        """An independent copy: each shard copied (see `FaissIndex.copy`)."""
        twin = type(self)(self.dim, **copy.deepcopy(self.params))
        if self._parts:
            twin._assemble([part.copy() for part in self._parts])
        return twin

    def reconstruct(self) -> np.ndarray:
        """All stored vectors, shard after shard (row i has id i)."""
        self._require_built()
        return np.concatenate([part.reconstruct() for part in self._parts])

    def _check_params(self) -> None:
        base, shards, base_params = (self.params[k] for k in ("base", "shards", "base_params"))
        if base not in SHARDABLE:
            raise InputError(f"sharded index parameter base: expected one of {list(SHARDABLE)}, "
                             f"got {base!r}")
        check_positive_int(shards, "sharded index parameter shards")
        if not isinstance(base_params, dict):
            raise InputError(f"sharded index parameter base_params: expected a dict, got "
                             f"{type(base_params).__name__}")
        SHARDABLE[base](self.dim, **base_params)  # InputError for a bad key or value
        if base_params.get("rerank"):
            raise InputError("sharded index parameter base_params: rerank is not supported "
                             "across shards; use one ivf index with rerank")

    def _is_built(self) -> bool:
        return bool(self._parts)

    def _build(self, vectors: np.ndarray) -> None:
        shards = self.params["shards"]
        if len(vectors) < shards:
            raise InputError(f"vectors: a sharded index of {shards} shards needs at least "
                             f"{shards} vectors, got {len(vectors)}")
        bounds = np.linspace(0, len(vectors), shards + 1).astype(int)
        parts = []
        for start, stop in itertools.pairwise(bounds):
            part = SHARDABLE[self.params["base"]](self.dim, **self.params["base_params"])
            part.build(vectors[start:stop])
            parts.append(part)
        self._assemble(parts)

    def _assemble(self, parts: list[FaissIndex]) -> None:
        shards = faiss.IndexShards(self.dim, True, True)  # threaded, successive ids
        for part in parts:
            shards.add_shard(part.faiss_index)
        self._parts, self._shards = parts, shards

    def _add(self, vectors: np.ndarray) -> np.ndarray:
        start = self.ntotal
        self._parts[-1].add(vectors)
        self._shards.syncWithSubIndexes()
        return np.arange(start, start + len(vectors), dtype=np.int64)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._shards.search(queries, k)

    def _save_files(self, folder: Path) -> dict[str, Any]:
        for i, part in enumerate(self._parts):
            part.save(shard_folder(folder, i))
        return {"shard_sizes": [part.ntotal for part in self._parts]}

    def _load_files(self, folder: Path, meta: dict[str, Any]) -> None:
        parts = [SHARDABLE[self.params["base"]].load(shard_folder(folder, i))
                 for i in range(self.params["shards"])]
        sizes = [part.ntotal for part in parts]
        if any(part.dim != self.dim for part in parts) or sizes != meta.get("shard_sizes"):
            raise ArtifactError(f"{folder / 'backend.json'}: shard_sizes "
                                f"{meta.get('shard_sizes')} and dim {self.dim} do not match the "
                                f"shard folders (sizes {sizes}); rebuild the index")
        self._assemble(parts)
