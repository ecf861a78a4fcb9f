"""scripts/make_debian_texts.py: texts from Translation files, deduplicated, in file order."""

from __future__ import annotations

import bz2
import lzma
from pathlib import Path

import pytest
from conftest import load_script

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"

GERMAN = """\
Package: alpha
Description-md5: 1111
Description-de: Ein   Betrachter
 Erster Absatz,
 zwei Zeilen.
 .
 Zweiter Absatz.

Package: beta
Description-md5: 2222
Description-de: Werkzeug
"""

ENGLISH = """\
Package: alpha
Description-md5: 1111
Description-en: A viewer
 First paragraph.

Package: beta
Description-md5: 2222
Description-en: Werkzeug
"""  # beta's English summary equals its German one: written once


@pytest.fixture(scope="module")
def script():
    return load_script(SCRIPTS / "make_debian_texts.py")  # it imports make_debtags beside it


def test_texts_of_a_translation_file(script):
    assert list(script.texts_of(GERMAN)) == [
        "alpha Ein Betrachter", "alpha Erster Absatz, zwei Zeilen.", "alpha Zweiter Absatz.",
        "beta Werkzeug"]
    long = "Package: x\nDescription-fr: " + "mot " * 200 + "\n"
    assert [len(t) for t in script.texts_of(long)] == [script.MAX_CHARS]


def test_main_writes_each_text_once_in_file_order(script, tmp_path, monkeypatch):
    cache = tmp_path / "cache" / "bookworm"
    cache.mkdir(parents=True)
    (cache / "Translation-de.bz2").write_bytes(bz2.compress(GERMAN.encode()))
    (cache / "Translation-en.xz").write_bytes(lzma.compress(ENGLISH.encode()))
    monkeypatch.setattr(script, "fetch", lambda releases, folder: sorted(
        folder / r / name for r in releases for name in ("Translation-de.bz2",
                                                           "Translation-en.xz")))
    out = tmp_path / "texts.txt"
    assert script.main(["--releases", "bookworm", "--cache", str(tmp_path / "cache"),
                        "--out", str(out)]) == 0
    assert out.read_text().splitlines() == [
        "alpha Ein Betrachter", "alpha Erster Absatz, zwei Zeilen.", "alpha Zweiter Absatz.",
        "beta Werkzeug", "alpha A viewer", "alpha First paragraph."]


def test_translation_files_picks_one_compression_per_language(script, monkeypatch):
    release = ("SHA256:\n 00 10 main/i18n/Translation-de.bz2\n 00 12 main/i18n/Translation-de.xz\n"
               " 00 5 main/i18n/Translation-en\n 00 9 main/i18n/Translation-en.xz\n"
               " 00 3 contrib/i18n/Translation-fr.bz2\n")
    monkeypatch.setattr(script, "read_index", lambda source: release)
    assert script.translation_files("bookworm") == ["main/i18n/Translation-de.bz2",
                                                    "main/i18n/Translation-en.xz"]
