"""What a command may replace: only its own kind of output, never the user's files, its input,
or the current folder; and label edits that lose nothing under concurrency."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import entries
from typer.testing import CliRunner

from metricls import Tagger, build_index, load_config, train_embedder
from metricls.catalog import tag_catalog
from metricls.cli import app
from metricls.errors import ArtifactError, InputError
from metricls.outputs import check_output
from metricls.staging import folder_lock

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


def cli(*args: str):
    return CliRunner().invoke(app, ["--quiet", *map(str, args)])


def _user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "thesis.tex").write_text("mine")
    return path


def _intact(path: Path) -> bool:
    return (path / "thesis.tex").read_text() == "mine"


# ---- train / run -------------------------------------------------------------------------------
def test_train_never_replaces_a_folder_that_is_not_a_tagger(tmp_path, synthetic_path):
    mine = _user_folder(tmp_path / "mine")
    for extra in ([], ["--overwrite"]):
        res = cli("train", TINY, "--set", f"data.path={synthetic_path}", "--out", mine, *extra)
        assert res.exit_code == 2, res.output
        assert res.output.strip().startswith(f"error: {mine}: exists and is not a metricls "
                                             "tagger folder")
        assert _intact(mine) and sorted(os.listdir(mine)) == ["thesis.tex"]


def test_train_replaces_a_tagger_only_with_overwrite(tiny_tagger_copy, synthetic_path):
    before = (tiny_tagger_copy / "manifest.json").read_bytes()
    res = cli("train", TINY, "--set", f"data.path={synthetic_path}", "--out", tiny_tagger_copy)
    assert res.exit_code == 2 and "already holds a tagger; pass --overwrite" in res.output
    assert (tiny_tagger_copy / "manifest.json").read_bytes() == before
    (tiny_tagger_copy / "notes.txt").write_text("mine")  # a file of the user's inside
    res = cli("train", TINY, "--set", f"data.path={synthetic_path}", "--out", tiny_tagger_copy,
              "--overwrite")
    assert res.exit_code == 2 and "notes.txt, which metricls did not write" in res.output
    (tiny_tagger_copy / "notes.txt").unlink()
    res = cli("train", TINY, "--set", f"data.path={synthetic_path}", "--set", "train.epochs=1",
              "--out", tiny_tagger_copy, "--overwrite")
    assert res.exit_code == 0, res.output
    assert (tiny_tagger_copy / "manifest.json").read_bytes() != before


def test_outputs_never_hold_the_current_folder_or_the_input(tmp_path, synthetic_path,
                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    for out in (".", "..", str(tmp_path)):
        with pytest.raises(InputError, match="is the current folder or one of its parents"):
            check_output(out, "tagger", overwrite=True)
    data = tmp_path / "work" / "items.jsonl"
    data.parent.mkdir()
    shutil.copy(synthetic_path, data)
    cfg = load_config(TINY, [f"data.path={data}"])
    with pytest.raises(InputError, match="holds this command's input"):
        train_embedder(cfg, out=data.parent, overwrite=True)
    assert data.read_bytes() == Path(synthetic_path).read_bytes()


# ---- label edits -------------------------------------------------------------------------------
def test_labels_add_out_never_replaces_a_user_folder(tiny_tagger_copy, tmp_path):
    mine = _user_folder(tmp_path / "mine")
    res = cli("labels", "add", tiny_tagger_copy, "new::x", "--out", mine, "--overwrite")
    assert res.exit_code == 2 and "exists and is not a metricls tagger folder" in res.output
    assert _intact(mine)
    res = cli("labels", "add", tiny_tagger_copy, "new::x", "--out", tmp_path)  # a parent of input
    assert res.exit_code == 2 and "holds this command's input" in res.output


def test_label_edits_and_build_refuse_a_tagger_holding_user_files(tiny_tagger_copy):
    (tiny_tagger_copy / "my-notes.md").write_text("mine")
    res = cli("labels", "add", tiny_tagger_copy, "new::x")
    assert res.exit_code == 2 and "my-notes.md, which metricls did not write" in res.output
    with pytest.raises(InputError, match=r"my-notes\.md, which metricls did not write"):
        build_index(tiny_tagger_copy)
    assert (tiny_tagger_copy / "my-notes.md").read_text() == "mine"
    assert "new::x" not in Tagger.load(tiny_tagger_copy).labels


def test_concurrent_label_adds_from_processes_all_survive(tiny_tagger_copy):
    names = [f"new::p{i}" for i in range(3)]
    procs = [subprocess.Popen([sys.executable, "-m", "metricls.cli", "--quiet", "labels", "add",
                               str(tiny_tagger_copy), name], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for name in names]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    labels = Tagger.load(tiny_tagger_copy).labels
    assert all(name in labels for name in names), (labels[-5:], outputs)


def test_saving_over_a_folder_changed_since_load_is_refused(tiny_tagger_copy):
    first, second = Tagger.load(tiny_tagger_copy), Tagger.load(tiny_tagger_copy)
    first.add_label("new::a")
    first.save(tiny_tagger_copy)
    second.add_label("new::b")
    with pytest.raises(ArtifactError, match="changed on disk since this tagger was loaded"):
        second.save(tiny_tagger_copy)
    assert "new::a" in Tagger.load(tiny_tagger_copy).labels  # the first edit is kept


def test_a_writer_waits_for_the_lock_of_another(tiny_tagger_copy):
    # hold the folder's lock in this thread; a CLI edit in another thread waits, then runs
    done = []
    with folder_lock(tiny_tagger_copy):
        worker = threading.Thread(target=lambda: done.append(
            cli("labels", "add", tiny_tagger_copy, "new::late")))
        worker.start()
        worker.join(timeout=3)
        assert worker.is_alive() and not done  # blocked on the lock
    worker.join(timeout=600)
    assert done and done[0].exit_code == 0, done[0].output
    assert "new::late" in Tagger.load(tiny_tagger_copy).labels


def test_predictions_beside_label_edits_see_before_or_after(tiny_tagger_copy):
    tagger = Tagger.load(tiny_tagger_copy)
    texts = ["w1x1 w1x2 noise3", "w3x0 w3x1 noise2", "w2x2 w2x3"]
    base = tagger.predict(texts, k=3)
    errors, seen = [], []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                rows = tagger.predict(texts, k=3)
            except Exception as exc:  # any failure is the finding
                errors.append(repr(exc))
                return
            seen.append(rows)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for cycle in range(15):
            tagger.add_label(f"new::c{cycle}", ["w1x1 w1x2", "w3x0 noise2"])
            tagger.remove_label(f"new::c{cycle}")
            tagger.remove_label(tagger.labels[0])
            tagger.add_label(f"back::{cycle}", ["w2x2 w2x3"])
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
    assert seen and all(len(rows) == 3 and all(len(r) == 3 for r in rows) for rows in seen)
    assert base  # every tag name read in the same snapshot as its score (no IndexError above)


def test_add_remove_cycles_do_not_grow_the_item_index(tiny_tagger_copy):
    tagger = Tagger.load(tiny_tagger_copy)
    n = tagger.state.item_index.ntotal
    for cycle in range(5):
        tagger.add_label(f"new::{cycle}", ["w1x1 w1x2", "w3x0 noise2"])
        assert tagger.state.item_index.ntotal == n + 2
        tagger.remove_label(f"new::{cycle}")
        assert tagger.state.item_index.ntotal == tagger.state.item_labels.shape[0] == n
    tagger.add_label("kept", ["w1x1 w1x2", "w3x0 noise2"])
    tagger.update_label("kept", ["w2x2"], mode="replace")  # the first examples go with it
    assert tagger.state.item_index.ntotal == n + 1
    saved = Tagger.load(tagger.save(tiny_tagger_copy))
    saved.remove_label("kept")  # the saved tagger still knows which rows were examples
    assert saved.state.item_index.ntotal == n


# ---- catalogs ----------------------------------------------------------------------------------
def test_tag_catalog_never_deletes_its_input_or_the_current_folder(tiny_tagger_dir, tmp_path,
                                                                   synthetic_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    data = out / "catalog.jsonl"
    shutil.copy(synthetic_path, data)
    res = cli("tag-catalog", tiny_tagger_dir, "--data", data, "--out", out, "--overwrite")
    assert res.exit_code == 2 and "holds this command's input" in res.output
    assert data.read_bytes() == Path(synthetic_path).read_bytes()
    monkeypatch.chdir(out)
    res = cli("tag-catalog", tiny_tagger_dir, "--data", data, "--out", ".", "--overwrite")
    assert res.exit_code == 2 and "is the current folder" in res.output
    assert sorted(os.listdir(out)) == ["catalog.jsonl"]  # no temp folder left either
    mine = _user_folder(tmp_path / "mine")
    with pytest.raises(InputError, match="not a metricls catalog folder"):
        tag_catalog(tiny_tagger_dir, data, mine, overwrite=True)
    assert _intact(mine)


# ---- permissions -------------------------------------------------------------------------------
def test_a_folder_metricls_cannot_write_is_one_line(tiny_tagger_copy, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tiny_tagger_copy.parent))

    monkeypatch.setattr("metricls.staging.os.rename", denied)  # e.g. a read-only parent
    res = cli("labels", "add", tiny_tagger_copy, "new::x")
    assert res.exit_code == 1
    assert res.output.strip() == f"error: {tiny_tagger_copy.parent}: permission denied: " \
                                 "metricls cannot write there"


# ---- paths as the file system resolves them ---------------------------------------------------
def test_dotdot_after_a_missing_folder_is_checked_where_it_lands(tiny_tagger_copy, tmp_path,
                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = _user_folder(tmp_path / "precious")
    res = cli("labels", "add", tiny_tagger_copy, "new::x", "--out", "nope/../precious")
    assert res.exit_code == 2 and "exists and is not a metricls tagger folder" in res.output
    assert _intact(mine) and not (tmp_path / "nope").exists()


def test_outputs_inside_the_input_or_under_a_file_are_refused(tiny_tagger_copy, tmp_path,
                                                              synthetic_path):
    res = cli("labels", "add", tiny_tagger_copy, "new::x", "--out", tiny_tagger_copy / "sub")
    assert res.exit_code == 2 and "lies inside this command's input" in res.output
    res = cli("report", tiny_tagger_copy, "--out", tiny_tagger_copy / "rep")
    assert res.exit_code == 2 and "lies inside this command's input" in res.output
    res = cli("labels", "add", tiny_tagger_copy, "new::x", "--out", f"{synthetic_path}/p3")
    assert res.exit_code == 2 and "is a file, not a folder" in res.output
    assert entries(tiny_tagger_copy.parent) == ["tagger"]  # no lock file inside the tagger
    assert Tagger.load(tiny_tagger_copy).labels[-1] != "new::x"
    res = cli("labels", "add", tiny_tagger_copy, "new::y")  # and it stays editable
    assert res.exit_code == 0, res.output


def test_a_link_to_a_tagger_is_edited_through(tiny_tagger_copy, tmp_path):
    link = tmp_path / "current"
    link.symlink_to(tiny_tagger_copy)
    res = cli("labels", "add", link, "new::linked")
    assert res.exit_code == 0, res.output
    assert link.is_symlink() and "new::linked" in Tagger.load(tiny_tagger_copy).labels


def test_what_lands_in_the_output_while_a_command_runs_is_not_replaced(tiny_tagger_dir,
                                                                      tmp_path,
                                                                      synthetic_path,
                                                                      monkeypatch):
    import metricls.catalog as catalog

    out = tmp_path / "cat"
    real_tag_here = catalog._tag_here

    def tag_then_user_writes(*args):  # the user saves a file there while the command works
        out.mkdir(exist_ok=True)
        (out / "notes.txt").write_text("mine")
        return real_tag_here(*args)

    monkeypatch.setattr(catalog, "_tag_here", tag_then_user_writes)
    with pytest.raises(InputError, match="is not a metricls catalog folder"):
        tag_catalog(tiny_tagger_dir, synthetic_path, out)
    assert (out / "notes.txt").read_text() == "mine"


def test_two_edits_writing_into_each_other_do_not_deadlock(tiny_tagger_copy, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_tagger_copy, other)
    procs = [subprocess.Popen([sys.executable, "-m", "metricls.cli", "--quiet", "labels", "add",
                               str(a), name, "--out", str(b), "--overwrite"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for a, b, name in ((tiny_tagger_copy, other, "new::ab"),
                                (other, tiny_tagger_copy, "new::ba"))]
    outputs = [p.communicate(timeout=300)[0] for p in procs]  # ran one after the other
    assert all(p.returncode in (0, 1) for p in procs), outputs
    assert any(p.returncode == 0 for p in procs), outputs


def test_build_index_after_label_edits_says_so(tiny_tagger_copy):
    assert cli("labels", "add", tiny_tagger_copy, "new::x").exit_code == 0
    with pytest.raises(InputError, match="its labels were edited since the build"):
        build_index(tiny_tagger_copy)
