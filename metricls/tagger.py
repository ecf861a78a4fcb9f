"""Tagger: the public face of a built tagger; embed inputs, run the tagging pipeline, name tags.

A Tagger is an encoder (`EmbeddingModel`) plus a `TaggerState` (labels, prototypes, indexes,
scoring, reranker), read from and written to a folder by `metricls.folder`. Tagging is
`metricls.pipeline.tag.score` on one snapshot of the state; label edits are the functions of
`metricls.pipeline.labels`, whose new state is swapped in with one assignment.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from metricls import folder as tagger_folder
from metricls.artifacts import read_json
from metricls.config import Config
from metricls.data.descriptions import label_text
from metricls.data.items import Items
from metricls.data.labels import LabelVocab
from metricls.encoders.model import EmbeddingModel
from metricls.errors import ArtifactError, InputError
from metricls.outputs import check_output
from metricls.pipeline import labels as label_edits
from metricls.pipeline import zero_shot
from metricls.pipeline.explain import explain
from metricls.pipeline.state import TaggerState
from metricls.pipeline.tag import named, score, selection
from metricls.staging import folder_lock, real_path
from metricls.validation import check_features, check_k, check_texts, describe

Inputs = Sequence[str] | np.ndarray | Items


class Tagger:
    """A trained, indexed multi-label tagger (a folder you can `save` and `load`).

    Example:
        >>> tagger = Tagger.load("index/debtags")
        >>> tagger.predict(["Python bindings for the GTK toolkit"], k=3)
        [[('uitoolkit::gtk', 0.9473), ('devel::lang:python', 0.2683), ...]]
    """

    def __init__(self, *, model: EmbeddingModel, state: TaggerState, config: Config,
                 metrics: dict | None = None) -> None:
        self.model = model
        self.config = config
        self.metrics = metrics or {}
        self._state = state  # replaced whole by label edits (see metricls/pipeline/state.py)
        self._origin: Path | None = None  # the folder it was loaded from or saved to
        self._origin_sha: str | None = None  # that folder's manifest then
        self._changes: list[dict] = []  # label edits since then
        self._writing = threading.RLock()  # one label edit or save at a time

    @classmethod
    def load(cls, path: str | Path) -> Tagger:
        """Load a tagger folder, verifying every checksum, that each file holds what its reader
        expects (format tags, shapes, dtypes, indices in range) and that its parts agree."""
        folder = Path(path)
        config, model, state, manifest = tagger_folder.read_tagger(folder)
        tagger = cls(model=model, state=state, config=config, metrics=manifest.get("metrics"))
        tagger._origin, tagger._origin_sha = folder, manifest.get("manifest_sha256")
        return tagger

    # ---- what it is ----------------------------------------------------------------------------
    @property
    def labels(self) -> tuple[str, ...]:
        """Label names; a label's id is its position here."""
        return self._state.vocab.names

    @property
    def vocab(self) -> LabelVocab:
        """Label names and training counts."""
        return self._state.vocab

    @property
    def state(self) -> TaggerState:
        """A snapshot of everything the pipeline reads but the encoder (never changes; a label
        edit makes a new one)."""
        return self._state

    @property
    def prototypes(self) -> np.ndarray:
        """(L, d) float32 label prototypes, label id = row."""
        return self._state.prototypes

    def __repr__(self) -> str:
        s = self._state
        return (f"Tagger(labels={len(s.vocab)}, dim={self.model.out_dim}, "
                f"backend={s.proto_index.backend!r}, items={s.item_index.ntotal})")

    # ---- tagging -------------------------------------------------------------------------------
    def embed(self, inputs: Inputs) -> np.ndarray:
        """(n, d) float32 L2-normalised embeddings of texts or feature rows."""
        texts, feats, n = self._inputs(inputs)
        if n == 0:
            return np.zeros((0, self.model.out_dim), dtype=np.float32)
        return self.model.embed(texts, feats)

    def predict(self, inputs: Inputs, *, k: int = 5,
                threshold: float | str | None = None) -> list[list[tuple[str, float]]]:
        """Scored tags per input: a list of `(label, score)`, best first.

        Args:
            inputs: texts (list of str), an (n, d) float array for a features backbone, or Items.
            k: at most this many tags per input.
            threshold: None returns k tags; a float keeps scores >= it; "tuned" uses the
                per-label thresholds tuned on the validation split (variable number of tags).

        Thread-safe, and changes nothing on the tagger: one snapshot of the labels serves the
        whole call, so a label edit in another thread shows in the next call, never halfway.
        """
        state = self._state
        k, cut = selection(k, threshold, state)
        return named(state, *self._scores(inputs, k, state), threshold, cut)

    def predict_scores(self, inputs: Inputs, *, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-`k` label scores and ids per input, best first: (scores f32, ids i64), each (n, k).

        Padding where fewer than k labels score is score -inf, id -1.
        """
        k, state = check_k(k), self._state
        if k > max(len(state.vocab), 1000):
            raise InputError(f"k: expected at most {max(len(state.vocab), 1000)}, got {k}")
        return self._scores(inputs, k, state)

    def explain(self, inputs: Inputs, *, k: int = 5, neighbours: int = 3) -> list[list[dict]]:
        """The top-k tags of each input with their evidence (`metricls.pipeline.explain`).

        Per input, one dict per tag, best first, with the same labels and scores as `predict`:
        ``label``, ``score``, ``description`` (None when the tagger has none), ``neighbours``
        (up to `neighbours` of the nearest indexed items that carry the label: ``id`` from the
        data's id column, ``similarity``), ``terms`` (words the text shares with the label's
        TF-IDF prototype), ``similarity`` (cosine to the label's prototype), ``vote`` (its
        share of the neighbour vote) and, with a reranker, ``features`` (what it read).
        """
        state = self._state
        k, _ = selection(k, None, state)
        per_tag = check_k(neighbours, name="neighbours")
        texts, feats, n = self._inputs(inputs)
        if n == 0:
            return []
        return explain(state, self.model.embed(texts, feats), k, texts, per_tag=per_tag)

    def _scores(self, inputs: Inputs, k: int,
                state: TaggerState) -> tuple[np.ndarray, np.ndarray]:
        """Embed the inputs and tag them through the pipeline on the snapshot `state`."""
        texts, feats, n = self._inputs(inputs)
        if n == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        return score(state, self.model.embed(texts, feats), k, texts)

    def _inputs(self, inputs: Inputs) -> tuple[list[str] | None, np.ndarray | None, int]:
        """(texts, feature rows, n) of what the caller passed, checked for this tagger."""
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

    # ---- label edits (metricls/pipeline/labels.py): in memory until `save` ----------------------
    def add_label(self, name: str, examples: Inputs | None = None, *,
                  description: str | None = None, add_items: bool = True) -> int:
        """Add a label and return its id (the new last one).

        Args:
            name: a new label name.
            examples: texts, an (n, d) array for a features backbone, or Items: the
                prototype is their normalised mean embedding. None: zero-shot, from the
                label's text: its name as words and its description when it has one
                (`metricls.data.descriptions.label_text`), and with a frozen text encoder
                the training items nearest that text (`metricls.pipeline.zero_shot`; the
                manifest's ``label_changes`` names them, ``started_from``).
            description: what the label means; None: the one the tagger knows from the
                data's label table (`data.label_table`) or an earlier edit, if any. A text
                tagger embeds the label's text as one more example.
            add_items: also index the examples as items carrying only this label, so that
                the neighbour vote can return it.

        Safe beside predictions in other threads: they see the tagger before or after.
        """
        with self._writing:
            name = label_edits.check_name(name)
            emb, example_emb, texts, started = self._label_embeddings(name, examples,
                                                                      description)
            self._state = label_edits.add_label(self._state, name, emb, example_emb, texts,
                                                add_items=add_items, description=description)
            self._changes.append(label_edits.change_record("add", name, len(example_emb),
                                                           description, add_items, started))
            return len(self._state.vocab) - 1

    def update_label(self, name: str, examples: Inputs | None = None, *,
                     description: str | None = None, mode: str = "replace",
                     add_items: bool = True) -> int:
        """Re-make a label's prototype from examples, "replace" or "merge"; returns its id.
        See `metricls.pipeline.labels.update_label`."""
        with self._writing:
            label_edits.check_mode(mode)
            if label_edits.check_name(name) not in self._state.vocab:
                self._state.vocab.index(name)  # InputError naming the nearest labels
            emb, example_emb, texts, started = self._label_embeddings(name, examples,
                                                                      description)
            self._state, label = label_edits.update_label(
                self._state, name, emb, example_emb, texts, mode=mode, add_items=add_items,
                description=description)
            self._changes.append(label_edits.change_record(f"update:{mode}", name,
                                                           len(example_emb), description,
                                                           add_items, started))
            return label

    def remove_label(self, name: str) -> int:
        """Remove a label everywhere; returns the id it had (later ids shift down by one)."""
        with self._writing:
            self._state, label = label_edits.remove_label(self._state, name)
            self._changes.append({"op": "remove", "label": name})
            return label

    def _label_embeddings(self, name: str, examples: Inputs | None,
                          description: str | None
                          ) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
        """(m, d) embeddings of the examples and the label text, those of the examples alone,
        the texts among them (for the TF-IDF prototypes), and the ids of the training items a
        zero-shot label started from (`_zero_shot`; else none). The label text joins the
        examples when the label has a description (given, or known), and is all there is
        zero-shot."""
        if description is None and self.model.needs == {"texts"}:  # only text can be embedded
            description = self._state.descriptions.get(name)
        elif description is not None and (not isinstance(description, str)
                                          or not description.strip()):
            raise InputError(f"description: expected a non-empty text, got "
                             f"{describe(description)}")
        example_emb = np.zeros((0, self.model.out_dim), dtype=np.float32)
        texts: list[str] = []
        if examples is not None:
            found = label_edits.check_examples(examples)
            try:
                texts = list(self._inputs(found)[0] or [])  # none for feature rows
                example_emb = self.embed(found)
            except InputError as exc:  # the tagger names its argument "inputs"
                raise InputError("examples" + str(exc).removeprefix("inputs")) from None
            if description is None:
                return example_emb, example_emb, texts, []
        text = label_text(name, description)
        if self.model.needs != {"texts"}:
            raise InputError("description: this tagger reads feature vectors and cannot embed a "
                             "label text; give examples as an (n, d) array")
        text = check_texts([text], name="description")[0]
        text_emb, started = self.embed([text]), []
        if examples is None:
            text_emb, started = self._zero_shot(text, text_emb)
        return np.vstack([example_emb, text_emb]), example_emb, [*texts, text], started

    def _zero_shot(self, text: str, text_emb: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """(1, d) the prototype of a label made from its text alone, and the ids of the items
        it started from: with the trained items' frozen-encoder vectors, the mean of the items
        nearest the text there plus the text's embedding (`pipeline.zero_shot`); else the
        text's embedding, from no items."""
        state, m = self._state, self.config.index.zero_shot_examples
        if state.item_frozen is None or not m or not self.model.frozen_dim:
            return text_emb, []
        proto, ids = zero_shot.from_text(state, self.model.frozen_text([text])[0], text_emb[0], m)
        return proto[None, :], ids

    # ---- saving --------------------------------------------------------------------------------
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the whole tagger folder atomically (temp folder, manifest last, swap).

        Saving over the folder it was loaded from is an in-place edit; any other existing
        tagger folder needs `overwrite`, and a folder that is not a tagger folder, or holds
        files metricls did not write, is never replaced (see `metricls.folder.write_edited`
        for what is carried over from the folder it was loaded from).

        Raises:
            InputError: `path` is not safe to replace (see `outputs.check_output`).
            ArtifactError: the folder it was loaded from changed on disk since (another writer
                saved it): load it again and redo the change, so that no edit is lost.
        """
        folder = Path(path)
        self._check_save(folder, overwrite)  # before the lock: a refused path gets no lock file
        with self._writing, folder_lock(folder):
            origin, in_place = self._check_save(folder, overwrite)  # again, under the lock
            if in_place and read_json(origin / "manifest.json").get("manifest_sha256") \
                    != self._origin_sha:
                raise ArtifactError(f"{folder}: changed on disk since this tagger was loaded "
                                    "from it (another writer saved it); load it again and redo "
                                    "the change, so that neither edit is lost")
            manifest = tagger_folder.write_edited(folder, config=self.config, model=self.model,
                                                  state=self._state, metrics=self.metrics,
                                                  origin=origin, changes=self._changes)
            self._origin, self._origin_sha = folder, manifest["manifest_sha256"]
            self._changes = []
        return folder

    def _check_save(self, folder: Path, overwrite: bool) -> tuple[Path | None, bool]:
        """The origin (None when gone) and whether `folder` is it; InputError when `folder`
        may not be replaced (see `outputs.check_output`)."""
        origin = self._origin if self._origin is not None and self._origin.is_dir() else None
        in_place = origin is not None and real_path(folder) == real_path(origin)
        check_output(folder, "tagger", overwrite=overwrite, in_place=in_place,
                     inputs=(origin,) if origin is not None else ())
        return origin, in_place

