"""The few-shot benchmark (benchmarks/fewshot/): choosing the held-out labels, a whole run on the
tiny data, and its command line."""

import json

import numpy as np
import pytest

from benchmarks.fewshot.run import bench_fewshot, choose_holdout, main, parse_shots
from metricls import Tagger
from metricls.config import load_config
from metricls.data.dataset import Dataset, read_config_items
from metricls.errors import InputError
from metricls.metrics import label_recall_at_k


def test_choose_holdout_is_seeded_and_spread_over_frequencies(synthetic_path):
    data = Dataset.load(load_config("configs/tiny.yaml", [f"data.path={synthetic_path}"]).data)
    picked = choose_holdout(data, 4, min_train=10, seed=0)
    assert picked == choose_holdout(data, 4, min_train=10, seed=0) and len(set(picked)) == 4
    counts = [data.vocab.counts[data.vocab.index(n)] for n in picked]
    assert counts == sorted(counts) and min(counts) >= 10  # one per frequency bin, in order
    assert choose_holdout(data, 4, min_train=10, seed=1) != picked
    with pytest.raises(InputError, match="--holdout: expected 1 to"):
        choose_holdout(data, 50, min_train=10)
    assert parse_shots("1,5,20") == [1, 5, 20]
    with pytest.raises(InputError, match="--shots"):
        parse_shots("1,x")


def test_fewshot_bench_on_tiny_data(tiny_tagger_dir, synthetic_path, tmp_path):
    out = tmp_path / "fewshot.json"
    result = bench_fewshot("configs/tiny.yaml", overrides=[f"data.path={synthetic_path}"],
                           holdout=3, shots=(1, 3), out=out, full=tiny_tagger_dir,
                           work=tmp_path / "work")
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert out.with_suffix(".md").read_text().count("\n") == 2 + len(result["rows"])
    rows = {r["variant"]: r for r in result["rows"]}
    assert list(rows) == ["fully trained (labels in training)", "held out, not added",
                          "zero-shot (name)", "1-shot", "1-shot + items", "3-shot",
                          "3-shot + items"]
    names = [entry["name"] for entry in result["labels"]]
    holdout = Tagger.load(tmp_path / "work" / "holdout")
    assert not set(names) & set(holdout.labels)
    assert rows["held out, not added"]["R@10 held-out"] == 0.0
    # the full row, recomputed: mean over the held-out labels of their test recall@10
    full = Tagger.load(tiny_tagger_dir)
    test = read_config_items(full.config.data).subset("test")
    _, ids = full.predict_scores(test, k=10)
    support, found = label_recall_at_k(ids, full.vocab.to_csr(test.labels)[0], 10)
    picked = [full.vocab.index(n) for n in names]
    expected = float(np.mean(found[picked] / support[picked]))
    assert rows["fully trained (labels in training)"]["R@10 held-out"] == pytest.approx(expected)
    assert all(0 < rows[v]["R@10 held-out"] <= 1 for v in ("1-shot", "3-shot + items"))
    # the same held-out tagger, reused, scored on valid (where settings are chosen)
    again = bench_fewshot("configs/tiny.yaml", overrides=[f"data.path={synthetic_path}"],
                          holdout=3, shots=(1, 3), out=tmp_path / "valid.json",
                          full=tiny_tagger_dir, work=tmp_path / "work", split="valid",
                          reuse=True)
    assert again["split"] == "valid" and again["timings"]["train_holdout_s"] < 5
    assert [r["variant"] for r in again["rows"]] == list(rows)
    with pytest.raises(InputError, match="--reuse"):
        bench_fewshot("configs/tiny.yaml", overrides=[f"data.path={synthetic_path}"],
                      holdout=2, shots=(1, 3), out=tmp_path / "x.json", full=tiny_tagger_dir,
                      work=tmp_path / "work", reuse=True)  # other labels held out


def test_fewshot_cli_gives_one_error_line(tmp_path, capsys):
    assert main(["configs/tiny.yaml", "--shots", "1,x", "--out", str(tmp_path / "f.json")]) == 2
    printed = capsys.readouterr()
    assert printed.err.strip() == ("error: --shots: expected comma-separated positive ints, "
                                   "e.g. 1,5,20, got '1,x'") and not printed.out
    assert not (tmp_path / "f.json").exists()
