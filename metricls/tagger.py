"""Tagger: embed inputs, search the prototype and item indexes, return scored tags."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

import metricls.living as living
from metricls.ann import AnnIndex, load_index
from metricls.artifacts import check_folder, read_json, save_tensors, write_json
from metricls.config import Config, from_dict, to_dict
from metricls.data.items import Items
from metricls.data.labels import LabelVocab
from metricls.encoders.model import EmbeddingModel
from metricls.errors import ArtifactError, InputError, NotFittedError
from metricls.formats import (
    CSR_FORMAT,
    PROTOTYPES_FORMAT,
    RERANKER_FORMAT,
    TFIDF_FORMAT,
    check_csr,
    read_tensors,
)
from metricls.prototypes import read_prototypes
from metricls.rerank import (
    FEATURES,
    WIDE_KNN,
    Candidates,
    LabelStats,
    Neighbours,
    Reranker,
    candidate_features,
)
from metricls.scoring import (
    Scoring,
    apply_thresholds,
    blend_scores,
    prototype_matrix,
    top_k,
    vote_matrix,
    with_label_bias,
)
from metricls.tfidf import TfidfPrototypes
from metricls.validation import check_features, check_k, check_texts, to_number

Inputs = Sequence[str] | np.ndarray | Items
SCORE_BATCH = 2048  # rows scored at a time (as evaluation.tag_items batches)
RERANKER = "reranker.safetensors"  # present when build-index fitted a reranker
TFIDF = "tfidf.safetensors"  # present when build-index made TF-IDF prototypes


class Tagger:
    """A trained, indexed multi-label tagger (a folder you can `save` and `load`).

    Example:
        >>> tagger = Tagger.load("index/debtags")
        >>> tagger.predict(["Python bindings for the GTK toolkit"], k=3)
        [[('devel::lang:python', 0.83), ('uitoolkit::gtk', 0.79), ...]]
    """

    def __init__(self, *, model: EmbeddingModel, vocab: LabelVocab, prototypes: np.ndarray,
                 proto_index: AnnIndex, item_index: AnnIndex, item_labels: sp.csr_matrix,
                 scoring: Scoring, config: Config, metrics: dict | None = None,
                 reranker: Reranker | None = None, tfidf: TfidfPrototypes | None = None) -> None:
        self.model = model
        self.vocab = vocab
        self.prototypes = prototypes  # (L, d) float32, label id = row
        self.proto_index = proto_index
        self.item_index = item_index
        self.item_labels = sp.csr_matrix(item_labels, dtype=np.float32)  # (n_train, L)
        self.scoring = scoring
        self.reranker = reranker  # None: scores are the blend of `scoring` (see `combine`)
        self.tfidf = tfidf  # label prototypes over TF-IDF vectors of the texts, for the reranker
        self.config = config
        self.metrics = metrics or {}
        self.origin: Path | None = None  # the folder it was loaded from (see `save`)
        self.label_changes: list[dict] = []  # made since then (see metricls/living.py)

    @property
    def labels(self) -> tuple[str, ...]:
        """Label names; a label's id is its position here."""
        return self.vocab.names

    # ---- inference -------------------------------------------------------------------------
    def _inputs(self, inputs: Inputs) -> tuple[list[str] | None, np.ndarray | None, int]:
        if isinstance(inputs, Items):
            return inputs.texts, inputs.features, len(inputs)
        if isinstance(inputs, np.ndarray) and inputs.ndim == 2 and inputs.dtype.kind in "fiu":
            if "features" not in self.model.needs:
                raise InputError("inputs: this tagger reads texts, pass a list of strings")
            dim = next(b.out_dim for b in self.model.backbones if b.name == "features")
            feats = check_features(inputs, dim, name="inputs")
            return None, feats, len(feats)
        texts = check_texts(inputs, name="inputs")
        if "features" in self.model.needs:
            raise InputError("inputs: this tagger reads feature vectors, pass an (n, d) array")
        return texts, None, len(texts)

    def embed(self, inputs: Inputs) -> np.ndarray:
        """(n, d) float32 L2-normalised embeddings of texts or feature rows."""
        texts, feats, n = self._inputs(inputs)
        if n == 0:
            return np.zeros((0, self.model.out_dim), dtype=np.float32)
        return self.model.embed(texts, feats)

    def predict_scores(self, inputs: Inputs, *, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-`k` label scores and ids per input, best first: (scores f32, ids i64), each (n, k).

        Padding where fewer than k labels score is score -inf, id -1.
        """
        k = check_k(k)
        if k > max(len(self.vocab), 1000):
            raise InputError(f"k: expected at most {max(len(self.vocab), 1000)}, got {k}")
        return self._predict(inputs, k)

    def predict(self, inputs: Inputs, *, k: int = 5,
                threshold: float | str | None = None) -> list[list[tuple[str, float]]]:
        """Scored tags per input: a list of `(label, score)`, best first.

        Args:
            inputs: texts (list of str), an (n, d) float array for a features backbone, or Items.
            k: at most this many tags per input.
            threshold: None returns k tags; a float keeps scores >= it; "tuned" uses the
                per-label thresholds tuned on the validation split (variable number of tags).
        """
        k, cut = self._selection(k, threshold)
        return self._tags(*self._predict(inputs, k), threshold, cut)

    def predict_embeddings(self, emb: np.ndarray, *, k: int = 5,
                           threshold: float | str | None = None,
                           texts: Sequence[str] | None = None) -> list[list[tuple[str, float]]]:
        """`predict` on (n, d) embeddings from `embed`: tag and keep the vectors, embed once.
        A tagger whose reranker reads TF-IDF (`reads_texts`) needs the `texts` too."""
        k, cut = self._selection(k, threshold)
        emb = check_features(emb, self.model.out_dim, name="embeddings")
        if texts is not None:
            texts = check_texts(texts, name="texts")
        if len(emb) == 0:
            return []
        return self._tags(*self.score_embeddings(emb, k, texts), threshold, cut)

    def _selection(self, k: int, threshold: float | str | None) -> tuple[int, float | None]:
        """k capped at the label count, and the numeric threshold (None for None or "tuned")."""
        k = min(check_k(k), len(self.vocab))  # more than L tags cannot exist
        if threshold is None or (isinstance(threshold, str) and threshold == "tuned"):
            return k, None
        try:
            return k, to_number(threshold)  # refuses bools, strings, arrays, NaN, inf, 10**400
        except InputError as exc:
            raise InputError(f"threshold: expected None, a number or 'tuned'; {exc}") from None

    def _tags(self, scores: np.ndarray, ids: np.ndarray, threshold: float | str | None,
              cut: float | None) -> list[list[tuple[str, float]]]:
        # cut is None for "tuned": apply_thresholds then uses the tuned thresholds
        keep = ids >= 0 if threshold is None else apply_thresholds(scores, ids, self.scoring, cut)
        names = self.vocab.names
        return [[(names[i], float(s)) for i, s, ok in zip(row_ids, row_scores, row_keep) if ok]
                for row_ids, row_scores, row_keep in zip(ids, scores, keep)]

    def _predict(self, inputs: Inputs, k: int) -> tuple[np.ndarray, np.ndarray]:
        texts, feats, n = self._inputs(inputs)
        if n == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        return self.score_embeddings(self.model.embed(texts, feats), k, texts)

    @property
    def reads_texts(self) -> bool:
        """Whether scoring reads the texts beside their embeddings (the reranker's TF-IDF)."""
        return self.tfidf is not None and self.reranker is not None

    def search(self, emb: np.ndarray, *, candidates: int, knn: int,
               texts: Sequence[str] | None = None) -> Neighbours:
        """Nearest prototypes and nearest training items of (n, d) embeddings (no item search
        for `knn` 0: (n, 0) results), and the texts' TF-IDF prototype cosines when given."""
        protos = self.proto_index.search(emb, min(candidates, len(self.vocab)))
        knn = min(knn, self.item_index.ntotal)
        items = self.item_index.search(emb, knn) if knn > 0 else (
            np.zeros((len(emb), 0), np.float32), np.zeros((len(emb), 0), np.int64))
        tfidf = None
        if self.tfidf is not None and texts is not None:
            if len(texts) != len(emb):
                raise InputError(f"texts: expected one per embedding ({len(emb)}), got "
                                 f"{len(texts)}")
            tfidf = self.tfidf.scores(texts)
        return Neighbours(*protos, *items, tfidf)

    def combine(self, found: Neighbours, k: int, scoring: Scoring) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids): the reranker's probabilities when the tagger has one, else the
        blend of prototype similarity and the neighbour vote."""
        if self.reranker is not None:
            return self.reranker.top_k(self.candidates(found, scoring, max(self.reranker.depth,
                                                                            k)), k)
        n_labels = len(self.vocab)
        P = V = sp.csr_matrix((len(found.proto_ids), n_labels), dtype=np.float32)
        if scoring.blend > 0:
            P = prototype_matrix(with_label_bias(found.proto_scores, found.proto_ids, scoring),
                                 found.proto_ids, n_labels)
        if scoring.blend < 1:
            V = vote_matrix(found.item_scores[:, :scoring.knn], found.item_ids[:, :scoring.knn],
                            self.item_labels, scoring.temperature)
        return top_k(blend_scores(P, V, scoring.blend), k)

    def candidates(self, found: Neighbours, scoring: Scoring, depth: int) -> Candidates:
        """The reranker's view of the `depth` best prototypes: their ids and features."""
        return candidate_features(found, self.item_labels, self._label_stats(), scoring, depth)

    def _label_stats(self) -> LabelStats:
        """Label counts and co-occurrence of `item_labels`, cached until it changes."""
        Y = self.item_labels  # living labels replace it with a new matrix, never edit it
        if getattr(self, "_stats_of", None) is not Y:
            self._stats, self._stats_of = LabelStats.of(Y), Y
        return self._stats

    def neighbours(self, emb: np.ndarray, k: int,
                   texts: Sequence[str] | None = None) -> Neighbours:
        """The search behind `score_embeddings`: enough prototypes for top-k, and the knn items
        that the reranker or the scoring's vote reads (none for blend 1 without a reranker),
        and the TF-IDF cosines of the `texts` (required when `reads_texts`)."""
        s = self.scoring
        if self.reranker is not None:
            if self.reads_texts and texts is None:
                raise InputError("texts: this tagger's reranker reads the texts beside their "
                                 "embeddings (TF-IDF prototypes); pass texts=")
            return self.search(emb, candidates=max(s.candidates, self.reranker.depth, k),
                               knn=max(s.knn, WIDE_KNN), texts=texts)
        return self.search(emb, candidates=max(s.candidates, k), knn=s.knn if s.blend < 1 else 0)

    def score_embeddings(self, emb: np.ndarray, k: int,
                         texts: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Search both indexes for (n, d) embeddings (and their texts, see `neighbours`) and
        score into top-k (scores, ids), in batches of `SCORE_BATCH` rows so that memory stays
        O(batch x candidates)."""
        parts = [self.combine(self.neighbours(emb[s:s + SCORE_BATCH], k,
                                              None if texts is None else texts[s:s + SCORE_BATCH]),
                              k, self.scoring)
                 for s in range(0, max(len(emb), 1), SCORE_BATCH)]
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))

    # ---- living labels (metricls/living.py): in memory until `save` --------------------------
    def add_label(self, name: str, examples: Inputs | None = None, *,
                  description: str | None = None, add_items: bool = True) -> int:
        """Add a label from examples (their normalised mean embedding) or, zero-shot, from a
        description or its name; returns its id. See `metricls.living.add_label`."""
        return living.add_label(self, name, examples, description=description,
                                add_items=add_items)

    def update_label(self, name: str, examples: Inputs | None = None, *,
                     description: str | None = None, mode: str = "replace",
                     add_items: bool = True) -> int:
        """Re-make a label's prototype from examples, "replace" or "merge"; returns its id."""
        return living.update_label(self, name, examples, description=description, mode=mode,
                                   add_items=add_items)

    def remove_label(self, name: str) -> int:
        """Remove a label everywhere; returns the id it had (later ids shift down by one)."""
        return living.remove_label(self, name)

    def save(self, path: str | Path) -> Path:
        """Write the whole tagger folder atomically (manifest included); returns the folder."""
        return living.save_tagger(self, path)

    # ---- persistence -----------------------------------------------------------------------
    def write(self, folder: Path) -> None:
        """Write every file of the tagger into `folder` (the manifest is the caller's)."""
        write_json(folder / "config.json", to_dict(self.config))
        write_json(folder / "labels.json", self.vocab.to_dict())
        self.model.save(folder / "encoder")
        save_tensors(folder / "prototypes.safetensors",
                     {"prototypes": self.prototypes, "counts": self.vocab.counts.astype(np.int64)},
                     {"format": PROTOTYPES_FORMAT})
        Y = self.item_labels
        save_tensors(folder / "item_labels.safetensors",
                     {"indptr": Y.indptr.astype(np.int64), "indices": Y.indices.astype(np.int64),
                      "shape": np.array(Y.shape, dtype=np.int64)}, {"format": CSR_FORMAT})
        self.proto_index.save(folder / "ann" / "prototypes")
        self.item_index.save(folder / "ann" / "items")
        write_json(folder / "scoring.json", self.scoring.to_dict())
        if self.reranker is not None:
            save_tensors(folder / RERANKER, self.reranker.to_tensors(),
                         {"format": RERANKER_FORMAT, "features": ",".join(FEATURES)})
        if self.tfidf is not None:
            save_tensors(folder / TFIDF, self.tfidf.to_tensors(), {"format": TFIDF_FORMAT})

    @classmethod
    def load(cls, path: str | Path) -> Tagger:
        """Load a tagger folder, verifying every checksum, that each file holds what its reader
        expects (format tags, shapes, dtypes, indices in range) and that its parts agree."""
        folder = Path(path)
        if not (folder / "scoring.json").exists() and (folder / "encoder").exists():
            raise NotFittedError(f"{folder}: trained but not indexed; run "
                                 f"`metricls build-index {folder}`")
        manifest = check_folder(folder)
        config = from_dict(read_json(folder / "config.json"), source=str(folder / "config.json"))
        vocab = LabelVocab.from_dict(read_json(folder / "labels.json"))
        model = EmbeddingModel.load(folder / "encoder")
        L = len(vocab)
        prototypes = read_prototypes(folder / "prototypes.safetensors", L, model.out_dim)
        item_index = load_index(folder / "ann" / "items")
        path = folder / "item_labels.safetensors"
        item_labels = check_csr(path, read_tensors(path, CSR_FORMAT), (item_index.ntotal, L),
                                data=False, source="ann/items and labels.json")
        reranker = Reranker.load(folder / RERANKER) if (folder / RERANKER).exists() else None
        tfidf = TfidfPrototypes.load(folder / TFIDF, L) if (folder / TFIDF).exists() else None
        path = folder / "scoring.json"
        tagger = cls(model=model, vocab=vocab, prototypes=prototypes,
                     proto_index=load_index(folder / "ann" / "prototypes"),
                     item_index=item_index, item_labels=item_labels,
                     scoring=Scoring.from_dict(read_json(path), n_labels=L, source=str(path)),
                     config=config, metrics=manifest.get("metrics", {}), reranker=reranker,
                     tfidf=tfidf)
        tagger._check_consistent(folder)
        tagger.origin = folder
        return tagger

    def _check_consistent(self, folder: Path) -> None:
        L, d = len(self.vocab), self.model.out_dim
        checks: list[tuple[Any, Any, str]] = [
            (self.prototypes.shape, (L, d), "prototypes.safetensors"),
            (self.proto_index.dim, d, "ann/prototypes/backend.json"),
            (self.proto_index.ntotal, L, "ann/prototypes"),
            (self.item_index.dim, d, "ann/items/backend.json"),
            (self.item_index.ntotal, self.item_labels.shape[0], "ann/items"),
            (self.item_labels.shape[1], L, "item_labels.safetensors")]
        if self.tfidf is not None:
            checks.append((self.tfidf.centroids.shape[0], L, TFIDF))
        for found, expected, name in checks:
            if found != expected:
                raise ArtifactError(f"{folder / name}: expected {expected} (from labels.json and "
                                    f"encoder/config.json), found {found}; rebuild with "
                                    f"`metricls build-index {folder}`")
        for name, index in (("prototypes", self.proto_index), ("items", self.item_index)):
            if not index.ids_are_positions:  # they index the labels and item_labels' rows
                raise ArtifactError(f"{folder / 'ann' / name}: its ids are not the row positions "
                                    f"0..{index.ntotal - 1} (vectors were removed); rebuild with "
                                    f"`metricls build-index {folder}`")

    def __repr__(self) -> str:
        return (f"Tagger(labels={len(self.vocab)}, dim={self.model.out_dim}, "
                f"backend={self.proto_index.backend!r}, items={self.item_index.ntotal})")

