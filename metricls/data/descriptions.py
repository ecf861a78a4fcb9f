"""Label descriptions: a table of label names and what each label means.

A dataset may come with one (config ``data.label_table``): a JSONL, CSV or Parquet table with a
``label`` and a ``description`` column, one row per label; other columns are ignored, and so
are rows of labels the data does not use. The packaged ``debtags-labels`` is Debian's debtags
vocabulary (`scripts/make_debtags.py` extracts it). Descriptions make zero-shot prototypes
(`label_text`) and are shown beside explained tags; a label without one falls back to its name.
"""

from __future__ import annotations

import re
from pathlib import Path

from metricls.data.items import is_null, read_ids, resolve_dataset, show_value
from metricls.data.tables import read_table
from metricls.errors import InputError
from metricls.validation import describe, unicode_problem

LABEL, DESCRIPTION = "label", "description"  # the table's two columns


def read_descriptions(path: str | Path) -> dict[str, str]:
    """{label: description} of a label table (a file or a packaged name, "debtags-labels").

    Raises:
        InputError: naming the file, line or row and field: a missing column, an empty or
            repeated label, a description that is not a non-empty string.
    """
    file = resolve_dataset(str(path))
    table = read_table(file, str(path))
    names = read_ids(table, LABEL)
    out = {}
    for i, (name, text) in enumerate(zip(names, table.column(DESCRIPTION), strict=True)):
        if name != name.strip():
            raise table.error(i, LABEL, f"must not start or end with spaces, got {name!r}")
        if is_null(text) or not isinstance(text, str) or not text.strip():
            raise table.error(i, DESCRIPTION, f"must be a non-empty string, got {show_value(text)}")
        if problem := unicode_problem(text):
            raise table.error(i, DESCRIPTION, problem)
        out[name] = " ".join(text.split())
    return out


def label_text(name: str, description: str | None = None) -> str:
    """The text a zero-shot prototype embeds: the name as words ("works-with::image" -> "works
    with image"), then the description when there is one."""
    words = " ".join(re.sub(r"[:_\-/]+", " ", name).split())
    if description is None:
        return words
    if not isinstance(description, str) or not description.strip():
        raise InputError(f"description: expected a non-empty text, got {describe(description)}")
    return f"{words}: {' '.join(description.split())}"
