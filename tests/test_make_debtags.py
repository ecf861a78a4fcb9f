"""scripts/make_debtags.py on tiny fake Debian indexes."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import tarfile
from pathlib import Path

import pytest
from conftest import load_script

from metricls.data.descriptions import read_descriptions

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_debtags.py"

PACKAGES = """\
Package: zeta-tool
Version: 1.0
Section: utils
Tag: implemented-in::c, interface::commandline,
 role::program, special::not-yet-tagged
Description: Zeta command line tool
Description-md5: 1111

Package: alpha-viewer
Section: contrib/graphics
Tag: role::program, works-with::{image,text}, implemented-in::c
Description: Alpha viewer
Description-md5: 2222

Package: untagged-lib
Section: libs
Description: A library without tags
Description-md5: 3333

Package: only-special
Section: misc
Tag: special::not-yet-tagged
Description: Only bookkeeping tags
Description-md5: 4444

Package: no-translation
Section: misc
Tag: role::app-data
Description: Summary only
Description-md5: 5555
"""

TRANSLATIONS = """\
Package: alpha-viewer
Description-md5: 2222
Description-en: Alpha viewer
 Alpha views images and text
 in one window.
 .
 Features:
   * fast  rendering
   * themes
 .
 Enjoy.

Package: zeta-tool
Description-md5: 1111
Description-en: Zeta command line tool
 Zeta does one thing well.

Package: untagged-lib
Description-md5: 3333
Description-en: A library without tags
 Ignored.
"""


@pytest.fixture(scope="module")
def make_debtags():
    return load_script(SCRIPT)


def _read(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.mark.parametrize("suffix", ["", ".xz", ".gz", ".bz2"])
def test_builds_sorted_records(tmp_path, make_debtags, suffix):
    pack = {"": bytes, ".xz": lzma.compress, ".gz": gzip.compress, ".bz2": bz2.compress}[suffix]
    (tmp_path / f"Packages{suffix}").write_bytes(pack(PACKAGES.encode()))
    (tmp_path / f"Translation-en{suffix}").write_bytes(pack(TRANSLATIONS.encode()))
    out = tmp_path / "out" / "debtags.jsonl.gz"
    rc = make_debtags.main(["--packages", str(tmp_path / f"Packages{suffix}"),
                            "--translations", str(tmp_path / f"Translation-en{suffix}"),
                            "--out", str(out)])
    assert rc == 0
    rows = _read(out)
    assert [r["package"] for r in rows] == ["alpha-viewer", "no-translation", "zeta-tool"]
    alpha, plain, zeta = rows
    assert list(alpha) == ["package", "section", "summary", "description", "labels"]
    assert alpha["section"] == "graphics"
    assert alpha["summary"] == "Alpha viewer"
    assert alpha["description"] == ("Alpha views images and text in one window. Features: "
                                    "* fast  rendering * themes Enjoy.")
    assert alpha["labels"] == ["implemented-in::c", "role::program", "works-with::image",
                               "works-with::text"]
    assert zeta["labels"] == ["implemented-in::c", "interface::commandline", "role::program"]
    assert zeta["description"] == "Zeta does one thing well."
    assert plain == {"package": "no-translation", "section": "misc", "summary": "Summary only",
                     "description": "", "labels": ["role::app-data"]}
    assert not list(out.parent.glob("*.tmp"))


def test_output_is_deterministic_and_readable(tmp_path, make_debtags):
    (tmp_path / "Packages").write_text(PACKAGES)
    (tmp_path / "Translation-en").write_text(TRANSLATIONS)
    outs = []
    for name in ("a.jsonl.gz", "b.jsonl.gz"):
        make_debtags.main(["--packages", str(tmp_path / "Packages"), "--translations",
                           str(tmp_path / "Translation-en"), "--out", str(tmp_path / name)])
        outs.append((tmp_path / name).read_bytes())
    assert outs[0] == outs[1]
    from metricls.data import read_items

    items = read_items(tmp_path / "a.jsonl.gz", id_column="package",
                       text_columns=("summary", "description"))
    assert items.ids == ["alpha-viewer", "no-translation", "zeta-tool"]


def test_expand_braces_and_tags(make_debtags):
    assert make_debtags.expand_braces("a::{x,y}") == ["a::x", "a::y"]
    assert make_debtags.expand_braces("{a,b}::{x,y}") == ["a::x", "a::y", "b::x", "b::y"]
    assert make_debtags.parse_tags("b::z, a::{y, x},\n c::w, special::x") == [
        "a::x", "a::y", "b::z", "c::w"]


def test_missing_input_is_an_error(tmp_path, make_debtags, capsys):
    rc = make_debtags.main(["--packages", str(tmp_path / "nope"), "--out",
                            str(tmp_path / "o.jsonl.gz")])
    assert rc == 1
    assert "nope" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl.gz").exists()


def test_index_order(tmp_path, make_debtags):
    (tmp_path / "Packages").write_text(PACKAGES)
    out = tmp_path / "o.jsonl.gz"
    assert make_debtags.main(["--packages", str(tmp_path / "Packages"), "--out", str(out),
                              "--index-order"]) == 0
    rows = _read(out)
    assert [r["package"] for r in rows] == ["zeta-tool", "alpha-viewer", "no-translation"]
    assert rows[0]["summary"] == "Zeta command line tool" and rows[0]["description"] == ""


VOCABULARY = """Facet: role
Description: Role
 Role performed by the package

Tag: role::program
Description: Program
 Executable computer program.
 .
 Runs on its own.

Tag: role::plugin
Description: Plugin
"""


# ---- extracting the debtags vocabulary --------------------------------------------------------
def _deb(tmp_path, vocabulary: str):
    """A minimal .deb: an ar archive with debian-binary and data.tar.xz holding the file."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        body = vocabulary.encode()
        info = tarfile.TarInfo("./usr/share/debtags/vocabulary")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    members = [("debian-binary", b"2.0\n"), ("data.tar.xz", lzma.compress(raw.getvalue()))]
    out = b"!<arch>\n"
    for name, data in members:
        out += f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        out += data + (b"\n" if len(data) % 2 else b"")
    path = tmp_path / "debtags_1.0_all.deb"
    path.write_bytes(out)
    return path


def test_make_debtags_extracts_the_vocabulary_from_the_deb(tmp_path, make_debtags):
    records = make_debtags.label_records(make_debtags.read_vocabulary(str(_deb(tmp_path,
                                                                               VOCABULARY))))
    assert records == [
        {"label": "role::program", "description": "Program. Executable computer program. "
                                                  "Runs on its own.", "facet": "Role"},
        {"label": "role::plugin", "description": "Plugin", "facet": "Role"}]
    plain = tmp_path / "vocabulary"
    plain.write_text(VOCABULARY)
    assert make_debtags.label_records(make_debtags.read_vocabulary(str(plain))) == records


def test_make_debtags_writes_a_table_that_metricls_reads(tmp_path, make_debtags):
    packages = tmp_path / "Packages"
    packages.write_text("Package: foo\nTag: role::program\nDescription: a tool\n")
    out, labels = tmp_path / "items.jsonl.gz", tmp_path / "labels.jsonl"
    code = make_debtags.main(["--packages", str(packages), "--out", str(out), "--vocabulary",
                              str(_deb(tmp_path, VOCABULARY)), "--labels-out", str(labels)])
    assert code == 0
    assert read_descriptions(labels)["role::plugin"] == "Plugin"
    assert make_debtags.main(["--packages", str(packages), "--out", str(out), "--vocabulary",
                              str(tmp_path / "missing.deb"), "--labels-out",
                              str(tmp_path / "b.jsonl")]) == 1
    assert not (tmp_path / "b.jsonl").exists()


def test_make_debtags_writes_both_outputs_or_neither(tmp_path, make_debtags, capsys):
    packages = tmp_path / "Packages"
    packages.write_text("Package: foo\nTag: role::program\nDescription: a tool\n")
    out = tmp_path / "items.jsonl.gz"
    out.write_bytes(b"the old data")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code = make_debtags.main(["--packages", str(packages), "--out", str(out), "--vocabulary",
                              str(_deb(tmp_path, VOCABULARY + "\nTag: role::empty\n")),
                              "--labels-out", str(blocker / "labels.jsonl")])
    assert code == 1 and out.read_bytes() == b"the old data"
    assert capsys.readouterr().err.startswith("make_debtags: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Packages", "a-file",
                                                          "debtags_1.0_all.deb",
                                                          "items.jsonl.gz"]
    labels = make_debtags.label_records(VOCABULARY + "\nTag: role::empty\n")
    assert [r["label"] for r in labels] == ["role::program", "role::plugin"]  # no empty one
