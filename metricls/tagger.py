"""Tagger: embed inputs, search the prototype and item indexes, return scored tags."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

import metricls.living as living
from metricls.ann import AnnIndex, load_index
from metricls.artifacts import (
    check_folder,
    check_output,
    folder_lock,
    read_json,
    save_tensors,
    staged_dir,
    write_json,
    write_manifest,
)
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
    read_tensors_and_meta,
)
from metricls.prototypes import read_prototypes
from metricls.rerank import (
    FEATURES,
    WIDE_KNN,
    Candidates,
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
from metricls.state import TaggerState
from metricls.tfidf import TfidfPrototypes
from metricls.validation import check_features, check_k, check_texts, describe, to_number

Inputs = Sequence[str] | np.ndarray | Items
SCORE_BATCH = 2048  # rows scored at a time (as evaluation.tag_items batches)
RERANKER = "reranker.safetensors"  # present when build-index fitted a reranker
TFIDF = "tfidf.safetensors"  # present when build-index made TF-IDF prototypes
# manifest keys write_manifest sets itself
_MANIFEST_OWN = ("format", "created", "versions", "data", "metrics", "files", "manifest_sha256")


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
                 reranker: Reranker | None = None, tfidf: TfidfPrototypes | None = None,
                 trained_items: int | None = None) -> None:
        self.model = model
        # everything a label edit changes, replaced whole (see metricls/state.py)
        self._state = TaggerState(vocab=vocab, prototypes=prototypes, proto_index=proto_index,
                                  item_index=item_index, item_labels=item_labels,
                                  scoring=scoring, tfidf=tfidf, trained_items=trained_items)
        self.reranker = reranker  # None: scores are the blend of `scoring` (see `combine`)
        self.config = config
        self.metrics = metrics or {}
        self.origin: Path | None = None  # the folder it was loaded from (see `save`)
        self.label_changes: list[dict] = []  # made since then (see metricls/living.py)
        self._origin_sha: str | None = None  # the origin's manifest when loaded or saved
        self._writing = threading.RLock()  # one label edit or save at a time

    @property
    def labels(self) -> tuple[str, ...]:
        """Label names; a label's id is its position here."""
        return self._state.vocab.names

    @property
    def vocab(self) -> LabelVocab:
        """Label names and training counts."""
        return self._state.vocab

    @property
    def prototypes(self) -> np.ndarray:
        """(L, d) float32 label prototypes, label id = row."""
        return self._state.prototypes

    @property
    def proto_index(self) -> AnnIndex:
        """The ANN index of the prototypes."""
        return self._state.proto_index

    @property
    def item_index(self) -> AnnIndex:
        """The ANN index of the items behind the neighbour vote."""
        return self._state.item_index

    @property
    def item_labels(self) -> sp.csr_matrix:
        """(n_items, L) labels of the indexed items."""
        return self._state.item_labels

    @property
    def scoring(self) -> Scoring:
        """The tuned scoring (blend, vote, thresholds)."""
        return self._state.scoring

    @scoring.setter
    def scoring(self, scoring: Scoring) -> None:
        self._state = self._state.replace(scoring=scoring)

    @property
    def tfidf(self) -> TfidfPrototypes | None:
        """The TF-IDF label prototypes that the reranker reads, or None."""
        return self._state.tfidf

    @tfidf.setter
    def tfidf(self, tfidf: TfidfPrototypes | None) -> None:
        self._state = self._state.replace(tfidf=tfidf)

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
        k, state = check_k(k), self._state
        if k > max(len(state.vocab), 1000):
            raise InputError(f"k: expected at most {max(len(state.vocab), 1000)}, got {k}")
        return self._predict(inputs, k, state)

    def predict(self, inputs: Inputs, *, k: int = 5,
                threshold: float | str | None = None) -> list[list[tuple[str, float]]]:
        """Scored tags per input: a list of `(label, score)`, best first.

        Args:
            inputs: texts (list of str), an (n, d) float array for a features backbone, or Items.
            k: at most this many tags per input.
            threshold: None returns k tags; a float keeps scores >= it; "tuned" uses the
                per-label thresholds tuned on the validation split (variable number of tags).
        """
        state = self._state  # one snapshot from scores to names (see `score_embeddings`)
        k, cut = self._selection(k, threshold, state)
        return self._tags(*self._predict(inputs, k, state), threshold, cut, state)

    def predict_embeddings(self, emb: np.ndarray, *, k: int = 5,
                           threshold: float | str | None = None,
                           texts: Sequence[str] | None = None) -> list[list[tuple[str, float]]]:
        """`predict` on (n, d) embeddings from `embed`: tag and keep the vectors, embed once.
        A tagger whose reranker reads TF-IDF (`reads_texts`) needs the `texts` too."""
        state = self._state
        k, cut = self._selection(k, threshold, state)
        emb = check_features(emb, self.model.out_dim, name="embeddings")
        if texts is not None:
            texts = check_texts(texts, name="texts")
        if len(emb) == 0:
            return []
        return self._tags(*self.score_embeddings(emb, k, texts, state), threshold, cut, state)

    @staticmethod
    def _selection(k: int, threshold: float | str | None,
                   state: TaggerState) -> tuple[int, float | None]:
        """k capped at the label count, and the numeric threshold (None for None or "tuned")."""
        k = min(check_k(k), len(state.vocab))  # more than L tags cannot exist
        if threshold is None or (isinstance(threshold, str) and threshold == "tuned"):
            return k, None
        try:
            return k, to_number(threshold)  # refuses bools, strings, arrays, NaN, inf, 10**400
        except InputError as exc:
            raise InputError(f"threshold: expected None, a number or 'tuned'; {exc}") from None

    @staticmethod
    def _tags(scores: np.ndarray, ids: np.ndarray, threshold: float | str | None,
              cut: float | None, state: TaggerState) -> list[list[tuple[str, float]]]:
        # cut is None for "tuned": apply_thresholds then uses the tuned thresholds
        keep = ids >= 0 if threshold is None else apply_thresholds(scores, ids, state.scoring,
                                                                   cut)
        names = state.vocab.names
        return [[(names[i], float(s)) for i, s, ok in zip(row_ids, row_scores, row_keep) if ok]
                for row_ids, row_scores, row_keep in zip(ids, scores, keep)]

    def _predict(self, inputs: Inputs, k: int,
                 state: TaggerState) -> tuple[np.ndarray, np.ndarray]:
        texts, feats, n = self._inputs(inputs)
        if n == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        return self.score_embeddings(self.model.embed(texts, feats), k, texts, state)

    @property
    def reads_texts(self) -> bool:
        """Whether scoring reads the texts beside their embeddings (the reranker's TF-IDF)."""
        return self.tfidf is not None and self.reranker is not None

    def search(self, emb: np.ndarray, *, candidates: int, knn: int,
               texts: Sequence[str] | None = None,
               state: TaggerState | None = None) -> Neighbours:
        """Nearest prototypes and nearest training items of (n, d) embeddings (no item search
        for `knn` 0: (n, 0) results), and the texts' TF-IDF prototype cosines when given.
        `state`: the snapshot to search (default: the current one)."""
        state = state or self._state
        protos = state.proto_index.search(emb, min(candidates, len(state.vocab)))
        knn = min(knn, state.item_index.ntotal)
        items = state.item_index.search(emb, knn) if knn > 0 else (
            np.zeros((len(emb), 0), np.float32), np.zeros((len(emb), 0), np.int64))
        tfidf = None
        if state.tfidf is not None and texts is not None:
            if len(texts) != len(emb):
                raise InputError(f"texts: expected one per embedding ({len(emb)}), got "
                                 f"{len(texts)}")
            tfidf = state.tfidf.scores(texts)
        return Neighbours(*protos, *items, tfidf)

    def combine(self, found: Neighbours, k: int, scoring: Scoring,
                state: TaggerState | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids): the reranker's probabilities when the tagger has one, else the
        blend of prototype similarity and the neighbour vote (of `state`'s items)."""
        state = state or self._state
        if self.reranker is not None:
            return self.reranker.top_k(
                self.candidates(found, scoring, max(self.reranker.depth, k), state), k)
        n_labels = len(state.vocab)
        P = V = sp.csr_matrix((len(found.proto_ids), n_labels), dtype=np.float32)
        if scoring.blend > 0:
            P = prototype_matrix(with_label_bias(found.proto_scores, found.proto_ids, scoring),
                                 found.proto_ids, n_labels)
        if scoring.blend < 1:
            V = vote_matrix(found.item_scores[:, :scoring.knn], found.item_ids[:, :scoring.knn],
                            state.item_labels, scoring.temperature)
        return top_k(blend_scores(P, V, scoring.blend), k)

    def candidates(self, found: Neighbours, scoring: Scoring, depth: int,
                   state: TaggerState | None = None) -> Candidates:
        """The reranker's view of the `depth` best prototypes: their ids and features."""
        state = state or self._state
        return candidate_features(found, state.item_labels, state.label_stats, scoring, depth)

    def neighbours(self, emb: np.ndarray, k: int, texts: Sequence[str] | None = None,
                   state: TaggerState | None = None) -> Neighbours:
        """The search behind `score_embeddings`: enough prototypes for top-k, and the knn items
        that the reranker or the scoring's vote reads (none for blend 1 without a reranker),
        and the TF-IDF cosines of the `texts` (required when `reads_texts`)."""
        state = state or self._state
        s = state.scoring
        if self.reranker is not None:
            if self.reads_texts and texts is None:
                raise InputError("texts: this tagger's reranker reads the texts beside their "
                                 "embeddings (TF-IDF prototypes); pass texts=")
            return self.search(emb, candidates=max(s.candidates, self.reranker.depth, k),
                               knn=max(s.knn, WIDE_KNN), texts=texts, state=state)
        return self.search(emb, candidates=max(s.candidates, k),
                           knn=s.knn if s.blend < 1 else 0, state=state)

    def score_embeddings(self, emb: np.ndarray, k: int, texts: Sequence[str] | None = None,
                         state: TaggerState | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Search both indexes for (n, d) embeddings (and their texts, see `neighbours`) and
        score into top-k (scores, ids), in batches of `SCORE_BATCH` rows so that memory stays
        O(batch x candidates). One snapshot of the labels serves the whole call, so a label
        edit in another thread shows in the next call, never halfway through this one."""
        state = state or self._state
        parts = [self.combine(self.neighbours(emb[s:s + SCORE_BATCH], k,
                                              None if texts is None else texts[s:s + SCORE_BATCH],
                                              state), k, state.scoring, state)
                 for s in range(0, max(len(emb), 1), SCORE_BATCH)]
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))

    # ---- living labels (metricls/living.py): in memory until `save` --------------------------
    def add_label(self, name: str, examples: Inputs | None = None, *,
                  description: str | None = None, add_items: bool = True) -> int:
        """Add a label and return its id (the new last one).

        Args:
            name: a new label name.
            examples: texts, an (n, d) array for a features backbone, or Items: the
                prototype is their normalised mean embedding. None: zero-shot, from the
                `description` (else the name as words, `living.label_text`).
            description: a text for the label, embedded as one more example (text taggers).
            add_items: also index the examples as items carrying only this label, so that
                the neighbour vote can return it.

        Safe beside predictions in other threads: they see the tagger before or after.
        """
        with self._writing:
            name = living.check_name(name)
            emb, example_emb, texts = self._label_embeddings(name, examples, description)
            self._state = living.add_label(self._state, name, emb, example_emb, texts,
                                           add_items=add_items)
            self.label_changes.append(living.change_record("add", name, len(example_emb),
                                                           description, add_items))
            return len(self._state.vocab) - 1

    def update_label(self, name: str, examples: Inputs | None = None, *,
                     description: str | None = None, mode: str = "replace",
                     add_items: bool = True) -> int:
        """Re-make a label's prototype from examples, "replace" or "merge"; returns its id.
        See `metricls.living.update_label`."""
        with self._writing:
            living.check_mode(mode)
            if living.check_name(name) not in self._state.vocab:
                self._state.vocab.index(name)  # InputError naming the nearest labels
            emb, example_emb, texts = self._label_embeddings(name, examples, description)
            self._state, label = living.update_label(self._state, name, emb, example_emb,
                                                     texts, mode=mode, add_items=add_items)
            self.label_changes.append(living.change_record(f"update:{mode}", name,
                                                           len(example_emb), description,
                                                           add_items))
            return label

    def remove_label(self, name: str) -> int:
        """Remove a label everywhere; returns the id it had (later ids shift down by one)."""
        with self._writing:
            self._state, label = living.remove_label(self._state, name)
            self.label_changes.append({"op": "remove", "label": name})
            return label

    def _label_embeddings(self, name: str, examples: Inputs | None,
                          description: str | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(m, d) embeddings of the examples and the label text, those of the examples alone, and
        the texts among them (for the TF-IDF prototypes)."""
        example_emb = np.zeros((0, self.model.out_dim), dtype=np.float32)
        texts: list[str] = []
        if examples is not None:
            found = living.check_examples(examples)
            try:
                texts = list(self._inputs(found)[0] or [])  # none for feature rows
                example_emb = self.embed(found)
            except InputError as exc:  # the tagger names its argument "inputs"
                raise InputError("examples" + str(exc).removeprefix("inputs")) from None
            if description is None:
                return example_emb, example_emb, texts
        text = living.label_text(name) if description is None else description
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"description: expected a non-empty text, got {describe(text)}")
        if self.model.needs != {"texts"}:
            raise InputError("description: this tagger reads feature vectors and cannot embed a "
                             "label text; give examples as an (n, d) array")
        text = check_texts([text], name="description")[0]
        return np.vstack([example_emb, self.embed([text])]), example_emb, [*texts, text]

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the whole tagger folder atomically (temp folder, manifest last, swap).

        Saving over the folder it was loaded from is an in-place edit; any other existing
        tagger folder needs `overwrite`, and a folder that is not a tagger folder, or holds
        files metricls did not write, is never replaced. From the folder it was loaded from
        (`origin`) it carries the manifest's data summary and build report,
        ``training.json``, the model card and the learned label vectors (rows kept by name;
        a label added since gets its prototype); the manifest's ``label_changes`` lists every
        change made since the build.

        Raises:
            InputError: `path` is not safe to replace (see `artifacts.check_output`).
            ArtifactError: the origin changed on disk since it was loaded (another writer saved
                it): load it again and redo the change, so that no edit is lost.
        """
        folder = Path(path)
        with self._writing, folder_lock(folder):
            origin = self.origin if self.origin is not None and self.origin.is_dir() else None
            in_place = origin is not None and folder.resolve() == origin.resolve()
            check_output(folder, "tagger", overwrite=overwrite, in_place=in_place,
                         inputs=(origin,) if origin is not None else ())
            old = read_json(origin / "manifest.json") if origin else {}
            if in_place and old.get("manifest_sha256") != self._origin_sha:
                raise ArtifactError(f"{folder}: changed on disk since this tagger was loaded "
                                    "from it (another writer saved it); load it again and redo "
                                    "the change, so that neither edit is lost")
            changes = [*old.get("label_changes", []), *self.label_changes]
            extra = {k: v for k, v in old.items() if k not in _MANIFEST_OWN}
            with staged_dir(folder) as tmp:
                self._write_edited(tmp, origin, changes)
                manifest = write_manifest(tmp, data=old.get("data", {}), metrics=self.metrics,
                                          extra=extra | {"label_changes": changes})
            self.origin, self.label_changes = folder, []
            self._origin_sha = manifest["manifest_sha256"]
        return folder

    def _write_edited(self, tmp: Path, origin: Path | None, changes: list[dict]) -> None:
        """Every file but the manifest, with what only the origin holds carried over."""
        self.write(tmp)
        if origin and (origin / "training.json").is_file():
            shutil.copy2(origin / "training.json", tmp / "training.json")
        if origin and (origin / "label_vectors.safetensors").is_file():
            state = self._state
            tensors = {"label_vectors": living.label_vectors(origin, state.vocab.names,
                                                             state.prototypes)}
            if state.scoring.label_bias:
                tensors["label_bias"] = state.scoring.bias_array
            save_tensors(tmp / "label_vectors.safetensors", tensors,
                         {"format": "metricls-label-vectors/1"})
        card = (origin / "README.md").read_text() if origin and (origin / "README.md").is_file() \
            else f"# metricls tagger `{self.config.name}`\n"
        (tmp / "README.md").write_text(living.card_with_changes(card, changes))

    # ---- persistence -----------------------------------------------------------------------
    def write(self, folder: Path) -> None:
        """Write every file of the tagger into `folder` (the manifest is the caller's)."""
        state = self._state
        write_json(folder / "config.json", to_dict(self.config))
        write_json(folder / "labels.json", state.vocab.to_dict())
        self.model.save(folder / "encoder")
        save_tensors(folder / "prototypes.safetensors",
                     {"prototypes": state.prototypes,
                      "counts": state.vocab.counts.astype(np.int64)},
                     {"format": PROTOTYPES_FORMAT})
        Y = state.item_labels
        save_tensors(folder / "item_labels.safetensors",
                     {"indptr": Y.indptr.astype(np.int64), "indices": Y.indices.astype(np.int64),
                      "shape": np.array(Y.shape, dtype=np.int64)},
                     {"format": CSR_FORMAT, "trained_rows": str(state.trained_items)})
        state.proto_index.save(folder / "ann" / "prototypes")
        state.item_index.save(folder / "ann" / "items")
        write_json(folder / "scoring.json", state.scoring.to_dict())
        if self.reranker is not None:
            save_tensors(folder / RERANKER, self.reranker.to_tensors(),
                         {"format": RERANKER_FORMAT, "features": ",".join(FEATURES)})
        if state.tfidf is not None:
            save_tensors(folder / TFIDF, state.tfidf.to_tensors(), {"format": TFIDF_FORMAT})

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
        csr, csr_meta = read_tensors_and_meta(path, CSR_FORMAT)
        item_labels = check_csr(path, csr, (item_index.ntotal, L), data=False,
                                source="ann/items and labels.json")
        reranker = Reranker.load(folder / RERANKER) if (folder / RERANKER).exists() else None
        tfidf = TfidfPrototypes.load(folder / TFIDF, L) if (folder / TFIDF).exists() else None
        path = folder / "scoring.json"
        tagger = cls(model=model, vocab=vocab, prototypes=prototypes,
                     proto_index=load_index(folder / "ann" / "prototypes"),
                     item_index=item_index, item_labels=item_labels,
                     scoring=Scoring.from_dict(read_json(path), n_labels=L, source=str(path)),
                     config=config, metrics=manifest.get("metrics", {}), reranker=reranker,
                     tfidf=tfidf,
                     trained_items=_trained_rows(csr_meta, item_labels.shape[0], folder))
        tagger._check_consistent(folder)
        tagger.origin, tagger._origin_sha = folder, manifest.get("manifest_sha256")
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



def _trained_rows(meta: dict[str, str], n_rows: int, folder: Path) -> int:
    """The rows of item_labels.safetensors from the build (all of them when not recorded)."""
    text = meta.get("trained_rows", str(n_rows))
    if not text.isdigit() or int(text) > n_rows:
        raise ArtifactError(f"{folder / 'item_labels.safetensors'}: trained_rows must be an int "
                            f"from 0 to {n_rows}, got {text!r}; rebuild with `metricls "
                            f"build-index {folder}`")
    return int(text)
