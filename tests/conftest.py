"""Shared fixtures: a tiny tagger trained once per session on generated data."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.append(str(Path(__file__).resolve().parents[1]))  # benchmarks/ (not installed)

from synthetic import make_items, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


def replaced(tagger, **changes):
    """A tagger like `tagger` whose state has `changes` (e.g. reranker=None: the blend)."""
    from metricls import Tagger

    twin = Tagger(model=tagger.model, state=tagger.state.replace(**changes),
                  config=tagger.config, metrics=tagger.metrics)
    twin._origin, twin._origin_sha = tagger._origin, tagger._origin_sha  # saves in place
    return twin


def entries(folder: Path) -> list[str]:
    """The names in `folder`, sorted, but the writers' lock files (``.NAME.lock``), which
    stay beside the folders metricls writes."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Frozen-embedding caches go to a per-session temp folder, never to ~/.cache."""
    monkeypatch.setenv("METRICLS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("METRICLS_QUIET", "1")


@pytest.fixture(scope="session")
def synthetic_path(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "items.jsonl", make_items())


@pytest.fixture(scope="session")
def tiny_tagger_dir(tmp_path_factory, synthetic_path) -> Path:
    """A built tiny tagger folder (lexical backbone, flat index), made once per session."""
    folder = tmp_path_factory.mktemp("taggers") / "tiny"
    build_tiny(folder, synthetic_path)
    return folder


@pytest.fixture
def tiny_tagger_copy(tmp_path, tiny_tagger_dir) -> Path:
    """A private copy of the tiny tagger that a test may alter."""
    target = tmp_path / "tagger"
    shutil.copytree(tiny_tagger_dir, target)
    return target


def resized(text: str) -> str:
    """LightGBM model text with its ``tree_sizes`` line recomputed from the trees as they now
    are: an edited model whose sizes agree, as a careful forger would write it."""
    head, _, rest = text.partition("\nTree=")
    trees, end, tail = ("Tree=" + rest).partition("end of trees")
    pieces = [p for p in re.split(r"(?m)^(?=Tree=\d+$)", trees) if p]
    sizes = " ".join(str(len(p.encode())) for p in pieces)
    head = re.sub(r"(?m)^tree_sizes=.*$", f"tree_sizes={sizes}", head)
    return head + "\n" + trees + end + tail


def load_script(path: Path) -> ModuleType:
    """A script (not a package module) imported by path; its own folder is importable while
    it loads, as when it runs, so it may import its neighbours."""
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


# the tiny config with a frozen MiniLM beside the n-grams (short texts: fast on a CPU)
MINILM = ("encoder.backbones=[lexical, minilm]", "encoder.minilm.max_seq_length=16",
          "train.epochs=1")


def build_tiny(folder: Path, synthetic_path: Path, *overrides: str):
    """Train the tiny config on the generated items (with config `overrides`, e.g.
    "train.epochs=1") into `folder`, build its indexes, and return the built Tagger."""
    from metricls import build_index, load_config, train_embedder

    cfg = load_config(TINY, [f"data.path={synthetic_path}", *overrides])
    train_embedder(cfg, out=folder)
    return build_index(folder)
