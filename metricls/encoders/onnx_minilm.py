"""MiniLM through ONNX Runtime: the packaged weights exported once to ONNX (optionally int8).

`encoder.minilm.runtime: onnx` (or `onnx-int8`) encodes with ONNX Runtime instead of torch:
the bundled all-MiniLM-L6-v2 is exported with `torch.onnx.export` the first time it is needed
(int8: then quantised by ONNX Runtime's dynamic quantisation, per channel), and the model file
is kept beside the embedding cache (`cache_dir()`), keyed by the weights' sha256, so nothing is
downloaded and the export runs once per machine. Texts are tokenised by the model's own fast
tokenizer, encoded longest first in batches of similar length (little padding), mean-pooled
over their tokens and L2-normalised, as sentence-transformers does.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from metricls.config import CHOICES

log = logging.getLogger(__name__)
RUNTIMES = CHOICES["encoder.minilm.runtime"]  # torch, onnx, onnx-int8
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def available() -> bool:
    """Whether ONNX Runtime is installed (the torch path serves otherwise)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def model_file(runtime: str, weights: Path, folder: Path) -> Path:
    """The model of `runtime` ("onnx" or "onnx-int8") exported from the MiniLM in `weights`
    into `folder`, exported now if it is not there yet (atomically: a concurrent export
    writes the same file)."""
    path = folder / ("model-int8.onnx" if runtime == "onnx-int8" else "model.onnx")
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder, prefix=".export-") as tmp:
            fp32 = folder / "model.onnx"
            if not fp32.is_file():
                _export(weights, Path(tmp) / "model.onnx")
                os.replace(Path(tmp) / "model.onnx", fp32)
            if runtime == "onnx-int8":
                from onnxruntime.quantization import QuantType, quantize_dynamic

                quantize_dynamic(fp32, Path(tmp) / "int8.onnx", weight_type=QuantType.QInt8,
                                 per_channel=True)
                os.replace(Path(tmp) / "int8.onnx", path)
        log.info("exported MiniLM for ONNX Runtime to %s", path)
    return path


def _export(weights: Path, path: Path) -> None:
    """The MiniLM transformer in `weights` as ONNX (token embeddings out; pooling stays here)."""
    import torch
    from transformers import AutoModel

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = AutoModel.from_pretrained(str(weights)).eval()

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    example = tuple(torch.ones((2, 8), dtype=torch.int64) for _ in INPUTS)
    axes = {name: {0: "batch", 1: "tokens"} for name in (*INPUTS, "last_hidden_state")}
    with torch.no_grad():
        torch.onnx.export(TokenEmbeddings(), example, str(path), input_names=list(INPUTS),
                          output_names=["last_hidden_state"], dynamic_axes=axes,
                          opset_version=17, dynamo=False)


@functools.cache
def _session(model: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


@functools.cache
def _tokenizer(weights: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(weights))


def encode(texts: list[str], model: Path, weights: Path, max_seq_length: int,
           batch_size: int) -> np.ndarray:
    """(n, 384) float32 L2-normalised sentence embeddings of `texts` by the ONNX `model`
    (`model_file`), with the tokenizer of the MiniLM in `weights`."""
    session, tokenizer = _session(model), _tokenizer(weights)
    out = np.zeros((len(texts), 384), np.float32)
    order = np.argsort([-len(t) for t in texts], kind="stable")  # similar lengths batch together
    for start in range(0, len(texts), batch_size):
        rows = order[start:start + batch_size]
        tokens = tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                           max_length=max_seq_length, return_tensors="np")
        hidden = session.run(None, {name: tokens[name].astype(np.int64) for name in INPUTS})[0]
        mask = tokens["attention_mask"][..., None].astype(np.float32)
        mean = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        out[rows] = mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
    return out
