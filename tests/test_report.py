"""metricls report: the page, its figures and JSON, atomic writes, and a real-browser render."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import entries
from PIL import Image
from typer.testing import CliRunner

from metricls.cli import app
from metricls.errors import InputError, MetriclsError
from metricls.report import analysis, screenshot_html, write_report
from metricls.report.browser import find_chromium
from metricls.report.html import png_size
from metricls.report.writer import FIGURES
from metricls.runner import evaluate_folder

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# pure colours absent from the plots: each figure is swapped for one to find it on screen
SOLID = [(255, 0, 255), (0, 255, 0), (0, 255, 255), (255, 255, 0)]


@pytest.fixture(scope="module")
def report_dir(tiny_tagger_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "tiny-report"
    return write_report(tiny_tagger_dir, split="test", out=out, min_support=3)


def _without_timings(report: dict) -> dict:
    return {key: value for key, value in report.items() if key != "timings"}


def test_html_references_every_png_and_each_is_valid(report_dir):
    html = (report_dir / "index.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', html)
    pngs = sorted(path.name for path in report_dir.glob("*.png"))
    assert sorted(sources) == pngs == sorted(FIGURES.values())
    assert sorted(p.name for p in report_dir.iterdir()) == sorted(
        [*pngs, "index.html", "report.json"])
    for name in sources:
        path = report_dir / name
        assert path.read_bytes().startswith(PNG_MAGIC) and path.stat().st_size > 0
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            width, height = image.size
        assert png_size(path) == (width, height) and width > 0 and height > 0
        assert f'src="{name}" alt=' in html and f'width="{width}" height="{height}"' in html
    # self-contained: inline CSS only, no script, nothing fetched from elsewhere
    assert "<style>" in html and "<script" not in html.lower()
    assert not re.search(r"(src|href)=\"(https?:|//|/)", html)


def test_report_numbers_equal_evaluate_folder(report_dir, tiny_tagger_dir):
    content = json.loads((report_dir / "report.json").read_text())
    expected = evaluate_folder(tiny_tagger_dir, split="test")["metricls"]
    metrics = content["metrics"]
    assert _without_timings(metrics) == _without_timings(expected)
    assert set(metrics["timings"]) >= {"embed_s", "search_score_s", "total_s"}
    curves = content["curves"]
    for k in (1, 3, 5, 10):
        assert curves["P@k"][k - 1] == expected[f"P@{k}"]
        assert curves["R@k"][k - 1] == expected[f"R@{k}"]
    buckets, n = content["buckets"], expected["n_items"]
    # every true (item, label) pair falls in one bucket; the found ones are the top-10 hits
    assert sum(b["found"] for b in buckets) == round(expected["P@10"] * 10 * n)
    with_items = sum(b["labels_in_test"] for b in buckets)
    macro = sum(b["macro_recall"] * b["labels_in_test"] for b in buckets) / with_items
    assert macro == pytest.approx(expected["macro_R@10"])
    assert with_items == content["labels"]["n_with_test_items"]
    worst, best = content["labels"]["worst"], content["labels"]["best"]
    assert all(row["test_items"] >= 3 for row in worst + best)
    assert [r["recall"] for r in worst] == sorted(r["recall"] for r in worst)
    assert content["map"]["n_points"] == n


def test_bad_data_path_is_one_clear_error_and_writes_nothing(tiny_tagger_dir, tmp_path):
    out = tmp_path / "report"
    missing = tmp_path / "missing.jsonl"
    with pytest.raises(InputError, match=re.escape(f"{missing}: no such file")):
        write_report(tiny_tagger_dir, data=str(missing), out=out)
    result = CliRunner().invoke(app, ["report", str(tiny_tagger_dir), "--data", str(missing),
                                      "--out", str(out)])
    assert result.exit_code == 2 and "error:" in result.output and "Traceback" not in result.output
    assert entries(tmp_path) == []  # no report, no staged temp folder


def test_failure_while_drawing_leaves_the_previous_report(report_dir, tiny_tagger_dir,
                                                          tmp_path, monkeypatch):
    out = tmp_path / "report"
    shutil.copytree(report_dir, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("metricls.report.plots.plot_map", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_report(tiny_tagger_dir, split="test", out=out, min_support=3, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == ["report"]


def test_refuses_to_replace_a_folder_that_is_not_a_report(tiny_tagger_dir, tmp_path):
    keep = tmp_path / "notes"
    keep.mkdir()
    (keep / "todo.txt").write_text("mine")
    with pytest.raises(InputError, match="not a metricls report folder"):
        write_report(tiny_tagger_dir, out=keep)
    assert (keep / "todo.txt").read_text() == "mine"


def test_swapped_pairs_on_a_hand_built_case():
    # item 0: true {0, 1}, top-2 shows 0 and 2 -> 1 missed, 2 wrong
    # item 1: true {1}, top-1 shows 0 -> 1 missed, 0 wrong; item 2: all found
    Y = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32))
    ids = np.array([[0, 2, 1], [0, 1, 2], [2, -1, -1]])
    found = analysis.swapped_pairs(ids, Y, ["a", "b", "c"])
    assert found["pairs"] == [{"missed": "b", "predicted": "a", "items": 1},
                              {"missed": "b", "predicted": "c", "items": 1}]
    assert found["heatmap"] == {"missed": ["b"], "predicted": ["a", "c"], "items": [[1, 1]]}


def test_colour_groups_pick_an_informative_facet_or_fall_back_to_labels():
    rows = [["role::program", "lang::c"], ["role::program", "lang::perl"],
            ["role::program", "lang::c"], ["role::lib", "lang::c", "lang::perl"]]
    groups = analysis.colour_groups(rows)
    # role: 4 single-valued items, 3 of the top value -> 1; lang: 3 single, 2 of c -> 1; tie
    # broken by name
    assert groups.title == "facet lang" and groups.names == ["lang::c", "lang::perl"]
    assert groups.of_item.tolist() == [0, 1, 0, 0]
    plain = analysis.colour_groups([["x"], ["y", "x"], ["z"]], max_groups=2)
    assert plain.title == "most frequent labels" and plain.names == ["x", "y"]
    assert plain.of_item.tolist() == [0, 0, -1]
    with pytest.raises(InputError, match="facets found: \\['lang', 'role'\\]"):
        analysis.colour_groups(rows, facet="size")


def test_pca_finds_the_main_axis():
    rng = np.random.default_rng(0)
    axis = rng.normal(size=16)
    axis /= np.linalg.norm(axis)
    X = rng.normal(size=(300, 1)) * 5 * axis + rng.normal(scale=0.1, size=(300, 16))
    points, extra, shares = analysis.pca_2d(X, axis[None, :] + X.mean(axis=0))
    assert abs(float(np.corrcoef(points[:, 0], X @ axis)[0, 1])) > 0.99
    assert shares[0] > shares[1] and extra.shape == (1, 2)
    assert abs(extra[0, 0]) == pytest.approx(1.0, abs=0.01)  # the unit axis, seen from the mean


def test_missing_chromium_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MetriclsError, match=re.escape("apt-get install chromium")):
        find_chromium()


def test_report_renders_in_headless_chromium(report_dir, tmp_path):
    """The page as Chromium draws it: right size, not blank, and every figure painted."""
    shot = np.asarray(Image.open(screenshot_html(report_dir / "index.html",
                                                 tmp_path / "page.png")).convert("RGB"))
    assert shot.shape == (2000, 1280, 3)
    assert shot.reshape(-1, 3).std(axis=0).max() > 0  # not one flat colour
    # the same page with each figure replaced by a solid colour: every colour must show up
    # (each image loaded), and the real render has the plots, not flat colour, in those places
    solid = tmp_path / "solid"
    shutil.copytree(report_dir, solid)
    names = sorted(FIGURES.values())
    for name, colour in zip(names, SOLID, strict=True):
        Image.new("RGB", png_size(solid / name), colour).save(solid / name)
    tall = np.asarray(Image.open(screenshot_html(solid / "index.html", tmp_path / "solid.png",
                                                 height=8000)).convert("RGB")).astype(int)
    for name, colour in zip(names, SOLID, strict=True):
        mask = (np.abs(tall - colour).max(axis=2) <= 2)
        assert mask.sum() > 0, f"{name} was not drawn"
        visible = mask[:2000]
        if visible.any():
            painted = shot[visible]
            assert painted.std(axis=0).max() > 0, f"{name} shows as one flat colour"
