"""Nested, frozen config dataclasses: defaults live here, YAML files hold only overrides."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import types
import typing
import unicodedata
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from metricls.errors import ConfigError
from metricls.validation import file_problem

# Each field's comment (at the end of its line, or the comment lines right above it) is its
# meaning in docs/configuration.md: `python scripts/config_reference.py` regenerates that file.


@dataclass(frozen=True)
class DataConfig:
    """Where the items are and which columns mean what (keys = `read_items` arguments)."""

    # a table (.jsonl/.json/.ndjson, .csv, optionally .gz, or .parquet) or a packaged
    # dataset name
    path: str = "debtags"
    id_column: str = "package"  # unique item ids
    text_columns: tuple[str, ...] = ("summary", "description")  # joined with newlines
    feature_columns: tuple[str, ...] = ()  # numeric columns, the features in this order
    vector_column: str | None = None  # a column of equal-length number lists (features)
    # a list of labels per item (JSONL, Parquet), or a delimited string (CSV)
    label_column: str = "labels"
    label_delimiter: str = "|"  # separator of the labels in a CSV cell
    split_column: str | None = None  # train/valid/test per item; default: a hash of the id
    min_count: int = 1  # train items a label needs to enter the vocabulary
    features_path: str | None = None  # a .npy (n_items, d) float array, row i = table row i
    exclude_labels: tuple[str, ...] = ()  # labels left out of the vocabulary (held out)
    # label descriptions: a table with `label` and `description` columns (.jsonl/.csv/.parquet)
    # or a packaged name ("debtags-labels"); used for zero-shot labels and explanations
    label_table: str | None = None


@dataclass(frozen=True)
class LexicalConfig:
    """Hashed word and character n-grams into a trainable `EmbeddingBag`."""

    dim: int = 128  # width of the bag's vectors
    buckets: int = 262_144  # hash buckets (rows of the bag)
    word_ngrams: int = 2  # longest word n-gram
    char_ngrams: tuple[int, ...] = (3,)  # character n-gram lengths
    lowercase: bool = True  # lowercase the text before hashing


@dataclass(frozen=True)
class MiniLMConfig:
    """The frozen all-MiniLM-L6-v2 sentence encoder."""

    max_seq_length: int = 64  # tokens per text; longer texts are cut
    batch_size: int = 64  # texts per encoding batch
    # torch (sentence-transformers), onnx or onnx-int8 (ONNX Runtime: the packaged weights
    # exported once, cached beside the embedding cache; torch where onnxruntime is missing)
    runtime: str = "torch"


@dataclass(frozen=True)
class HeadConfig:
    """MLP projection from the concatenated backbones to the L2-normalised embedding."""

    hidden_dim: int = 512  # width of the hidden layer
    out_dim: int = 256  # dimension of the embedding (and of the label vectors)
    dropout: float = 0.1  # dropout while training


@dataclass(frozen=True)
class EncoderConfig:
    """The embedding network: backbones (concatenated) plus a projection head."""

    # lexical: hashed n-grams (trained); minilm: frozen sentence encoder; features: the
    # numeric features as they are
    backbones: tuple[str, ...] = ("lexical", "minilm")
    lexical: LexicalConfig = field(default_factory=LexicalConfig)
    minilm: MiniLMConfig = field(default_factory=MiniLMConfig)
    head: HeadConfig = field(default_factory=HeadConfig)


@dataclass(frozen=True)
class LossConfig:
    """A pytorch-metric-learning loss and its parameters (only the chosen loss's are used)."""

    name: str = "multi_similarity"  # the loss
    alpha: float = 2.0  # multi_similarity: weight of the positive pairs
    beta: float = 50.0  # multi_similarity: weight of the negative pairs
    base: float = 0.5  # multi_similarity: similarity the pairs are weighed around
    margin: float = 0.1  # triplet: margin between positive and negative similarity
    pos_margin: float = 0.5  # contrastive: positives more similar than this cost nothing
    neg_margin: float = 0.0  # contrastive: negatives less similar than this cost nothing
    temperature: float = 0.05  # decoupled_softmax: softmax temperature over cosines


@dataclass(frozen=True)
class MinerConfig:
    """Multi-label miners: item-to-label (learned label vectors) and item-to-item."""

    min_jaccard: float = 0.5  # item pairs: label-set Jaccard for a positive pair
    item_hard_negatives: int = 20  # item pairs: hardest negatives kept per anchor (0 = all)
    label_hard_negatives: int = 50  # item-label pairs: hardest lacking labels kept per item
    item_weight: float = 0.0  # weight of the item-to-item loss (0 = off)
    label_weight: float = 1.0  # weight of the item-to-label loss
    # weight of the label-text loss: each label's name and description, embedded by the
    # network, is pulled to its label vector (zero-shot labels then embed near where a
    # trained one would lie); 0 = off; texts only
    label_text_weight: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, sampling and early stopping."""

    epochs: int = 20  # most epochs (early stopping may end sooner)
    batch_size: int = 256  # items per batch
    labels_per_batch: int = 64  # labels drawn per batch, each with its items
    # labels are drawn by count ** label_power: 1 = as in the data, 0 = uniform (favours
    # the tail)
    label_power: float = 0.5
    lr: float = 2e-3  # AdamW learning rate (head, label vectors and biases)
    lexical_lr: float = 0.05  # SparseAdam learning rate of the lexical bag
    weight_decay: float = 1e-5  # AdamW weight decay
    patience: int = 3  # epochs without a better valid R@10 before stopping
    schedule: str = "cosine"  # learning rate: cosine decay to 0 over `epochs`, or constant
    warmup: float = 0.0  # fraction of all steps with a linear warm-up (cosine only)
    label_bias: bool = False  # learn a score offset per label: score = cos(item, label) + b_l
    seed: int = 0  # seed of the weights, the sampler and the miners
    device: str = "auto"  # auto = CUDA when present, else the CPU
    amp: bool = True  # kept for older configs: false makes precision "auto" mean fp32
    precision: str = "auto"  # fp32 | bf16 | fp16 (CUDA only); auto = bf16 on CUDA, else fp32
    threads: int = 0  # torch CPU threads (0 = all cores)


@dataclass(frozen=True)
class IndexConfig:
    """Prototypes, ANN backend and tag scoring."""

    backend: str = "hnsw"  # ANN library; auto: flat under `exact_below`, else hnsw (sq8 from 200k)
    # learned: the trained label vectors; mean: the mean embedding of each label's items
    prototypes: str = "learned"
    target_recall: float = 0.99  # recall@10 against exact search the label index is tuned to
    # the same for the item index, set lower: it only feeds votes over 10-30 neighbours
    item_target_recall: float = 0.95
    exact_below: int = 20_000  # backend auto: exact (flat) search under this many vectors
    shards: int = 1  # > 1: FAISS indexes split into this many shards, one file each
    pq_m: int | None = None  # ivf: product-quantise indexes of >= 10,000 vectors to pq_m bytes each
    knn: int = 30  # nearest training items whose labels vote
    candidates: int = 100  # most similar label prototypes scored per item
    rerank: bool = True  # fit a reranker of the candidates on valid, kept if it scores better
    tfidf: bool = True  # text taggers: TF-IDF label prototypes as two more reranker features
    # with the reranker: tags after the first 5 are ordered by probability /
    # propensity^tail_weight among its 50 candidates (rare labels rise from below; the first 5 stay
    # as they are); 0 = by probability alone
    tail_weight: float = 1.5
    # taggers with a frozen text encoder: a label added from its name and description alone
    # starts from the training items nearest its text in the frozen encoder's space (their
    # vectors are kept in the folder, 2 bytes x 384 per item); 0: from its text's embedding
    zero_shot_examples: int = 10


@dataclass(frozen=True)
class Config:
    """The whole resolved config of a tagger."""

    name: str = "tagger"  # the tagger's name; its default folder is index/<name>
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    miner: MinerConfig = field(default_factory=MinerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    index: IndexConfig = field(default_factory=IndexConfig)


CHOICES: dict[str, tuple[str, ...]] = {
    "encoder.backbones": ("lexical", "minilm", "features"),
    "encoder.minilm.runtime": ("torch", "onnx", "onnx-int8"),
    "loss.name": ("multi_similarity", "contrastive", "triplet", "decoupled_softmax"),
    "train.device": ("auto", "cpu", "cuda"),
    "train.precision": ("auto", "fp32", "bf16", "fp16"),
    "train.schedule": ("constant", "cosine"),
    "index.backend": ("auto", "flat", "hnsw", "ivf", "scann"),
    "index.prototypes": ("learned", "mean"),
}


_GE1 = (lambda v: v >= 1, ">= 1")
_POS = (lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
_NONNEG = (lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
_FINITE = (lambda v: math.isfinite(v), "a finite number")
# Allowed values of numeric settings (each element, for lists).
LIMITS: dict[str, tuple[Any, str]] = {
    "data.min_count": _GE1,
    "encoder.lexical.dim": _GE1, "encoder.lexical.buckets": _GE1,
    "encoder.lexical.word_ngrams": _GE1, "encoder.lexical.char_ngrams": _GE1,
    "encoder.minilm.max_seq_length": _GE1, "encoder.minilm.batch_size": _GE1,
    "encoder.head.hidden_dim": _GE1, "encoder.head.out_dim": _GE1,
    "encoder.head.dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "loss.alpha": _FINITE, "loss.beta": _FINITE, "loss.base": _FINITE, "loss.margin": _FINITE,
    "loss.pos_margin": _FINITE, "loss.neg_margin": _FINITE, "loss.temperature": _POS,
    "miner.min_jaccard": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "miner.item_hard_negatives": (lambda v: v >= 0, ">= 0"),
    "miner.label_hard_negatives": (lambda v: v >= 0, ">= 0"),
    "miner.item_weight": _NONNEG, "miner.label_weight": _NONNEG,
    "miner.label_text_weight": _NONNEG,
    "train.epochs": _GE1, "train.batch_size": (lambda v: v >= 2, ">= 2"),
    "train.labels_per_batch": _GE1, "train.label_power": _FINITE,
    "train.lr": _POS, "train.lexical_lr": _POS, "train.weight_decay": _NONNEG,
    "train.patience": (lambda v: v >= 0, ">= 0"),
    "train.warmup": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "train.seed": (lambda v: 0 <= v < 2**32, "in [0, 2**32)"),
    "train.threads": (lambda v: v >= 0, ">= 0 (0 = all cores)"),
    "index.tail_weight": _NONNEG,
    "index.zero_shot_examples": (lambda v: v >= 0, ">= 0"),
    "index.target_recall": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "index.item_target_recall": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "index.knn": _GE1, "index.candidates": _GE1, "index.exact_below": (lambda v: v >= 0, ">= 0"),
    "index.shards": _GE1, "index.pq_m": _GE1,
}


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Read a YAML config of overrides over the defaults, then apply dotted `key=value` overrides.

    Args:
        path: a YAML file, or None for the defaults.
        overrides: strings such as ``"train.lr=3e-4"``; values are parsed as YAML.

    Returns:
        The resolved, validated `Config`.

    Raises:
        ConfigError: unreadable file, unknown key (with its nearest match), wrong type or choice.

    Example:
        >>> cfg = load_config("configs/debtags.yaml", ["train.epochs=2"])
    """
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(Path(path))
    origins: dict[str, str] = {}  # dotted key -> the --set that gave it, named in its errors
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. train.lr=3e-4")
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except Exception as exc:  # PyYAML: YAMLError, also ValueError/AttributeError/RecursionError
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            shown = value if len(value) <= 40 else value[:37] + "..."
            raise ConfigError(f"override {key.strip()}: value {shown!r} is not valid YAML "
                              f"({reason})") from None
        _set_dotted(raw, key.strip(), parsed)
        origins[key.strip()] = _shown_override(item)
    source = str(path) if path is not None else "overrides"
    return from_dict(raw, source=source, origins=origins)


def _shown_override(item: str) -> str:
    """How an override is named in errors: ``--set KEY=VALUE``, a long value cut short."""
    key, _, value = item.partition("=")
    shown = value if len(value) <= 40 else value[:37] + "..."
    return f"--set {key.strip()}={shown}"


def from_dict(raw: dict[str, Any], *, source: str = "config",
              origins: typing.Mapping[str, str] | None = None) -> Config:
    """Build a `Config` from a nested dict of overrides (e.g. a saved ``config.json``).

    Args:
        raw: the nested overrides.
        source: where `raw` came from (a file), named in errors.
        origins: dotted key (or section) -> where its value came from instead, e.g.
            ``{"index.backend": "--backend"}``; errors about that key name it, not `source`.
    """
    return _build(Config, raw, prefix="", source=source, origins=origins or {})


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (tuples as lists) of a config, for JSON/YAML."""
    out = dataclasses.asdict(cfg)
    return _lists(out)


def dump_config(cfg: Config) -> str:
    """The config as YAML text."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def _lists(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _lists(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_lists(v) for v in obj]
    return obj


def _read_yaml(path: Path) -> dict[str, Any]:
    problem = file_problem(path, "config file not found")  # /dev/zero: endless, a FIFO: blocks
    if problem:
        raise ConfigError(f"{path}: {problem}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    except (yaml.YAMLError, UnicodeDecodeError, ValueError, AttributeError, TypeError,
            RecursionError) as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return data


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a section")
    node[parts[-1]] = value


def _build(cls: type, raw: Any, *, prefix: str, source: str,
           origins: typing.Mapping[str, str]) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'config'} must be a mapping, "
                          f"got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    for key in raw:
        if key not in names:
            near = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{prefix}{near[0]}'?" if near else f"; valid keys: {names}"
            where = next((origin for dotted, origin in origins.items()  # the --set of it
                          if f"{dotted}.".startswith(f"{prefix}{key}.")), source)
            raise ConfigError(f"{where}: unknown config key '{prefix}{key}'{hint}")
    kwargs = {}
    for name in names:
        if name not in raw:
            continue
        dotted = prefix + name
        hint, where = hints[name], origins.get(dotted, source)
        if is_dataclass(hint):
            kwargs[name] = _build(hint, raw[name], prefix=dotted + ".", source=where,
                                  origins=origins)
        else:
            kwargs[name] = _coerce(raw[name], hint, dotted, where)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, dotted: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            _wrong(dotted, "a list", value, source)
        out = tuple(_coerce(v, args[0], dotted, source) for v in value)
    else:
        out = _scalar(value, hint, dotted, source)
    _check_choice(out, dotted, source)
    if dotted == "name":
        _check_name(out, source)
    if dotted in LIMITS:
        ok, text = LIMITS[dotted]
        for v in out if isinstance(out, tuple) else (out,):
            if not ok(v):
                raise ConfigError(f"{source}: {dotted} must be {text}, got {v!r}")
    return out


def _scalar(value: Any, hint: type, dotted: str, source: str) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            _wrong(dotted, "true or false", value, source)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _wrong(dotted, "an integer", value, source)
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _wrong(dotted, "a number", value, source)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            _wrong(dotted, "a string", value, source)
        return value
    raise ConfigError(f"{source}: {dotted}: unsupported type {hint}")  # internal: new field type


def _check_name(name: str, source: str) -> None:
    """`name` must be a plain folder name: the default tagger folder is ``index/<name>``."""
    problem = (
        "must not be empty" if not name.strip() else
        "must not contain '/' or '\\'" if "/" in name or "\\" in name else
        "must not be '.' or '..'" if name in (".", "..") else
        "must not start with '.'" if name.startswith(".") else
        "must not contain control characters" if any(
            unicodedata.category(c) == "Cc" for c in name) else
        "must be valid Unicode (no lone surrogates)" if any(
            unicodedata.category(c) == "Cs" for c in name) else None)
    if problem:
        raise ConfigError(f"{source}: name {problem} (it names the folder index/<name>), "
                          f"got {name!r}")


def _check_choice(value: Any, dotted: str, source: str) -> None:
    valid = CHOICES.get(dotted)
    if valid is None:
        return
    for v in value if isinstance(value, tuple) else (value,):
        if v not in valid:
            raise ConfigError(f"{source}: {dotted} = {v!r} is not one of {list(valid)}")


def _wrong(dotted: str, expected: str, value: Any, source: str) -> typing.NoReturn:
    raise ConfigError(f"{source}: {dotted} must be {expected}, got {type(value).__name__} "
                      f"{value!r}")
