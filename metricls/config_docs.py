"""The configuration reference, docs/configuration.md, generated from the config dataclasses.

One table per section: each key's type, default, allowed values (`CHOICES`, `LIMITS`) and
meaning, the meaning being the field's comment in ``metricls/config.py`` (at the end of its
line, or the comment lines right above it).
"""

from __future__ import annotations

import ast
import inspect
import io
import tokenize
import typing
from dataclasses import MISSING, fields, is_dataclass
from typing import Any

from metricls import config

COMMAND = "python scripts/config_reference.py"
DOC_PATH = "docs/configuration.md"  # relative to the repository root


def config_reference() -> str:
    """The whole text of docs/configuration.md."""
    meanings = field_meanings()
    parts = ["# Configuration reference\n",
             f"Generated from `metricls/config.py` by `{COMMAND}`; do not edit by hand.\n",
             "A YAML config holds only the keys it changes from these defaults; "
             "`--set KEY=VALUE` changes one key on the command line "
             "(e.g. `--set train.lr=3e-4`, values are read as YAML).\n"]
    for prefix, cls in sections(config.Config):
        parts.append(_table(prefix, cls, meanings))
    return "\n".join(parts)


def sections(cls: type, prefix: str = "") -> list[tuple[str, type]]:
    """(dotted prefix, dataclass) of `cls` and of every section nested in it, depth first."""
    found = [(prefix, cls)]
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if is_dataclass(hints[f.name]):
            found += sections(hints[f.name], f"{prefix}{f.name}.")
    return found


def field_meanings() -> dict[tuple[str, str], str]:
    """(class name, field name) -> the field's comment in the source of `metricls.config`."""
    source = inspect.getsource(config)
    lines = source.splitlines()
    comments = {tok.start[0]: (tok.start[1], tok.string.lstrip("#").strip())
                for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                if tok.type == tokenize.COMMENT}
    found = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for stmt in node.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            above, row = [], stmt.lineno - 1
            while row in comments and not lines[row - 1][:comments[row][0]].strip():
                above.insert(0, comments[row][1])
                row -= 1
            after = [comments[r][1] for r in range(stmt.lineno, stmt.end_lineno + 1)
                     if r in comments and lines[r - 1][:comments[r][0]].strip()]
            text = " ".join(above + after)
            if text:
                found[(node.name, stmt.target.id)] = text
    return found


def _table(prefix: str, cls: type, meanings: dict[tuple[str, str], str]) -> str:
    hints = typing.get_type_hints(cls)
    title = f"`{prefix.rstrip('.')}`" if prefix else "Top level"
    doc = inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0].replace("\n", " ")
    rows = ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for f in fields(cls):
        if is_dataclass(hints[f.name]):
            continue
        key = prefix + f.name
        default = f.default if f.default is not MISSING else f.default_factory()
        cells = [f"`{key}`", _type_name(hints[f.name]), f"`{_yaml(default)}`", _allowed(key),
                 meanings.get((cls.__name__, f.name), "")]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return f"## {title}\n\n{doc}\n\n" + "\n".join(rows) + "\n"


def _type_name(hint: Any) -> str:
    args = typing.get_args(hint)
    if type(None) in args:
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + " or null"
    if typing.get_origin(hint) is tuple:
        return f"list of {_type_name(args[0])}"
    return hint.__name__


def _yaml(value: Any) -> str:
    """A default as it is written in a YAML config."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, str):
        return value if value else '""'
    return repr(value)


def _allowed(key: str) -> str:
    if key in config.CHOICES:
        return ", ".join(f"`{c}`" for c in config.CHOICES[key])
    if key in config.LIMITS:
        return config.LIMITS[key][1]
    return ""
