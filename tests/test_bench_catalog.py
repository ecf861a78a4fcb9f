"""The catalog benchmark (benchmarks/catalog/): comparing two engines' outputs, and its command
line."""

import pyarrow as pa
import pytest

from benchmarks.catalog.run import compare_tags, main


def test_compare_tags_reports_what_differs():
    def table(labels, scores):
        return pa.table({"row": pa.array([0, 1], pa.int64()), "id": ["a", "b"],
                         "labels": pa.array(labels, pa.list_(pa.string())),
                         "scores": pa.array(scores, pa.list_(pa.float32()))})

    base = table([["x", "y"], ["z"]], [[0.9, 0.5], [0.7]])
    assert compare_tags(base, base) == {"same_rows_and_ids": True, "same_labels": True,
                                        "max_score_diff": 0.0}
    moved = compare_tags(base, table([["x", "y"], ["z"]], [[0.9, 0.5], [0.75]]))
    assert moved["same_labels"] and moved["max_score_diff"] == pytest.approx(0.05, abs=1e-6)
    assert not compare_tags(base, table([["y", "x"], ["z"]], [[0.9, 0.5], [0.7]]))["same_labels"]


def test_bench_catalog_cli_gives_one_error_line(tmp_path, capsys):
    out = tmp_path / "catalog.json"
    status = main(["--tagger", str(tmp_path / "none"), "--data", str(tmp_path / "none.jsonl"),
                   "--out", str(out)])
    printed = capsys.readouterr()
    assert status == 2 and len(printed.err.strip().splitlines()) == 1
    assert printed.err.startswith("error: ") and not out.exists()
