"""Backbones, the MiniLM cache and the embedding model's save/load."""

import itertools
import re
import zlib

import numpy as np
import pytest
import torch

from metricls.config import load_config
from metricls.encoders.backbone import EmbeddingCache, FeatureBackbone, MiniLMBackbone
from metricls.encoders.lexical import LexicalBackbone, NgramHasher
from metricls.encoders.model import EmbeddingModel, build_model
from metricls.errors import ArtifactError, ConfigError, InputError


def test_hasher_is_stable_and_uses_ngrams():
    h = NgramHasher(buckets=1 << 16, word_ngrams=2, char_ngrams=(3,))
    a = h.ids("Perl module for images")
    assert np.array_equal(a, NgramHasher(1 << 16, 2, (3,)).ids("perl module for images"))
    words_only = NgramHasher(1 << 16, 1, ()).ids("perl module for images")
    assert len(words_only) == 4 and len(a) > len(words_only) + 3  # bigrams and char grams
    assert set(words_only) <= set(a)
    assert h.ids("").tolist() == [0]
    bags = h.bags(["perl module", "images"])
    assert len(bags) == 2 and bags.indptr[-1] == len(bags.ids)
    flat, offsets = bags.take(np.array([1, 0]))
    assert offsets.tolist() == [0, bags.indptr[2] - bags.indptr[1]]
    assert flat.tolist() == bags.ids[bags.indptr[1]:].tolist() + bags.ids[:bags.indptr[1]].tolist()


def _reference_ids(text: str, buckets: int, char_ngrams: tuple[int, ...]) -> list[int]:
    """A text's bucket ids written out plainly: CRC-32 of each word, of each word bigram's
    two word hashes mixed, and of each character n-gram of the padded words."""
    words = re.findall(r"[\w+#]+", text.lower())[:512]
    if not words:
        return [0]
    h = [zlib.crc32(b"w:" + w.encode()) for w in words]
    ids = set(h)
    for a, b in itertools.pairwise(h):
        ids.add((((a * 1_000_003 + b) % 2**64) ^ 2) & 0x7FFFFFFFFFFF)
    for w in words:
        padded = f"<{w}>"
        ids |= {zlib.crc32(b"c:" + padded[i:i + n].encode()) for n in char_ngrams
                for i in range(len(padded) - n + 1) if padded[i:i + n] != padded}
    return sorted({i % buckets for i in ids})


def test_hasher_ids_are_the_plain_definition_over_chunks_and_a_warm_cache():
    rng = np.random.default_rng(0)
    vocab = ["gtk", "C++", "perl", "x11", "lib#", "é", "a", "module", "images", "Qt5"]
    texts = [" ".join(rng.choice(vocab, rng.integers(0, 12))) for _ in range(150)]  # 3 chunks
    hasher = NgramHasher(1 << 12, 2, (3, 4))
    for _ in range(2):  # words hashed, then read from the cache
        bags = hasher.bags(texts)
        for i, text in enumerate(texts):
            got = bags.ids[bags.indptr[i]:bags.indptr[i + 1]].tolist()
            assert got == _reference_ids(text, 1 << 12, (3, 4)), text


def test_lexical_backbone_trains_sparse_rows():
    lex = LexicalBackbone(dim=8, buckets=512, char_ngrams=(3,))
    out = lex(lex.prepare(["alpha beta", "gamma"]).take(np.array([0, 1])))
    assert out.shape == (2, 8)
    out.sum().backward()
    assert lex.bag.weight.grad.is_sparse


def test_embedding_runs_in_eval_mode_and_keeps_the_models_own_mode():
    from metricls.config import EncoderConfig, LexicalConfig

    torch.manual_seed(0)
    model = build_model(EncoderConfig(backbones=("lexical",),
                                      lexical=LexicalConfig(dim=16, buckets=1 << 10)))
    texts = ["gtk bindings for python", "a chess engine", "perl module"]
    model.eval()
    expected = model.embed(texts)
    assert not model.training
    model.train()  # mid-training (the valid recall between epochs): dropout must be off
    assert np.array_equal(model.embed(texts), expected)
    assert model.training and all(m.training for m in model.modules())


def test_minilm_encodes_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("METRICLS_CACHE", str(tmp_path))
    backbone = MiniLMBackbone(max_seq_length=32)
    texts = ["a library for parsing XML", "a game of chess", "a library for parsing XML"]
    direct = backbone.encode(texts)
    assert direct.shape == (3, 384) and direct.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(direct, axis=1), 1.0, atol=1e-5)
    assert backbone.encode(texts[:1]).shape == (1, 384)  # 2-D for one text, always
    assert backbone.encode([]).shape == (0, 384)
    cache = EmbeddingCache(backbone)
    first = cache.get(texts)
    np.testing.assert_allclose(first, direct, atol=1e-5)
    assert len(list(cache.folder.glob("part-*.npz"))) == 1

    def fail(_texts):
        raise AssertionError("cached texts must not be encoded again")

    monkeypatch.setattr(backbone, "encode", fail)
    np.testing.assert_array_equal(EmbeddingCache(backbone).get(texts[::-1]), first[::-1])
    other = EmbeddingCache(MiniLMBackbone(max_seq_length=16))
    assert other.folder != cache.folder  # settings are part of the key


def test_minilm_through_onnx_runtime_matches_torch_and_exports_once(tmp_path, monkeypatch,
                                                                   caplog):
    from metricls.encoders import backbone as module

    monkeypatch.setenv("METRICLS_CACHE", str(tmp_path))
    texts = ["a library for parsing XML", "a game of chess with a graphical board", "", "x"]
    torch_way = MiniLMBackbone(max_seq_length=32).encode(texts)
    onnx = MiniLMBackbone(max_seq_length=32, runtime="onnx")
    got = onnx.encode(texts)
    assert got.shape == (4, 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, torch_way, atol=2e-4)  # the same network, another runtime
    exported = sorted(p.name for p in tmp_path.glob("minilm-onnx-*/*.onnx"))
    assert exported == ["model.onnx"]
    int8 = MiniLMBackbone(max_seq_length=32, runtime="onnx-int8").encode(texts)
    assert (np.sum(int8 * torch_way, axis=1) > 0.9).all()  # quantised: close, not equal
    assert sorted(p.name for p in tmp_path.glob("minilm-onnx-*/*.onnx")) == [
        "model-int8.onnx", "model.onnx"]
    before = {p: p.stat().st_mtime_ns for p in tmp_path.glob("minilm-onnx-*/*.onnx")}
    MiniLMBackbone(max_seq_length=32, runtime="onnx-int8").encode(texts[:1])
    assert {p: p.stat().st_mtime_ns for p in before} == before  # exported once
    # the runtime is part of the cache key, torch's key is the one it always was
    assert onnx.identity()["runtime"] == "onnx" and "runtime" not in MiniLMBackbone().identity()
    assert EmbeddingCache(onnx).folder != EmbeddingCache(MiniLMBackbone(32)).folder
    # without onnxruntime: torch, with one warning
    monkeypatch.setattr(module.onnx_minilm, "available", lambda: False)
    module._onnx_runtime_installed.cache_clear()
    try:
        fallback = MiniLMBackbone(max_seq_length=32, runtime="onnx").encode(texts)
        np.testing.assert_allclose(fallback, torch_way, atol=1e-6)
        assert "onnxruntime is not installed: encoding with torch" in caplog.text
    finally:
        module._onnx_runtime_installed.cache_clear()


def test_the_word_caches_fill_characters_first_so_other_threads_never_miss(monkeypatch):
    hasher = NgramHasher(buckets=1 << 16, word_ngrams=2, char_ngrams=(3,))

    class Checked(dict):
        def update(self, new):  # a reader that finds a word's hash must find its n-grams
            assert all(word in hasher._chars for word in new), "hashes published first"
            super().update(new)

    hasher._hash = Checked()
    assert len(hasher.bags(["alpha beta", "beta gamma"]).ids) > 0
    assert set(hasher._hash) == set(hasher._chars) == {"alpha", "beta", "gamma"}


def test_embeddings_encoded_by_torch_are_cached_as_torch_when_onnxruntime_is_missing(
        monkeypatch, tmp_path):
    from metricls.encoders import backbone as module

    monkeypatch.setenv("METRICLS_CACHE", str(tmp_path))
    monkeypatch.setattr(module.onnx_minilm, "available", lambda: False)
    module._onnx_runtime_installed.cache_clear()
    try:
        onnx = MiniLMBackbone(max_seq_length=32, runtime="onnx-int8")
        assert onnx.identity()["runtime"] == "onnx-int8"  # what the tagger folder records
        assert EmbeddingCache(onnx).folder == EmbeddingCache(MiniLMBackbone(32)).folder
    finally:
        monkeypatch.setattr(module.onnx_minilm, "available", lambda: True)
        module._onnx_runtime_installed.cache_clear()
    assert EmbeddingCache(onnx).folder != EmbeddingCache(MiniLMBackbone(32)).folder
    module._onnx_runtime_installed.cache_clear()


def test_an_unknown_minilm_runtime_names_the_key():
    with pytest.raises(ConfigError, match=r"encoder\.minilm\.runtime"):
        load_config(None, ["encoder.minilm.runtime=tensorrt"])
    with pytest.raises(InputError, match=r"encoder\.minilm\.runtime: expected one of"):
        MiniLMBackbone(runtime="tensorrt")


def test_model_save_load_round_trip(tmp_path):
    cfg = load_config(None, ["encoder.backbones=[lexical, features]",
                             "encoder.lexical.buckets=1024", "encoder.lexical.dim=8",
                             "encoder.head.hidden_dim=16", "encoder.head.out_dim=8"])
    model = build_model(cfg.encoder, feature_dim=3)
    texts, feats = ["red apple", "blue sky"], np.eye(2, 3, dtype=np.float32)
    before = model.embed(texts, feats)
    model.save(tmp_path / "enc")
    after = EmbeddingModel.load(tmp_path / "enc").embed(texts, feats)
    np.testing.assert_allclose(before, after, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(after, axis=1), 1.0, atol=1e-5)
    (tmp_path / "enc" / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="cannot read the encoder"):
        EmbeddingModel.load(tmp_path / "enc")


def test_feature_backbone_checks_shape_and_needs():
    with pytest.raises(InputError, match=r"expected shape \(n, 4\)"):
        FeatureBackbone(4).prepare(np.zeros((2, 3), np.float32))
    model = build_model(load_config(None, ["encoder.backbones=[features]"]).encoder,
                        feature_dim=2)
    assert model.needs == {"features"}
    with pytest.raises(InputError, match="needs features"):
        model.prepare(["text"], None)
    assert isinstance(model(model.prepare(None, np.ones((1, 2), np.float32)), np.array([0])),
                      torch.Tensor)
