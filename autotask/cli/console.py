"""One console for the CLI: error mapping, tables and progress."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from copy import copy
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column, Table

__all__ = [
    "err",
    "first_paragraph",
    "fmt",
    "out",
    "plain_text",
    "progress_bar",
    "table",
    "write_json",
]

out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


def fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.3e}"
    return "-" if value is None else str(value)


#: Text columns whose cells are all at most this long are never wrapped.
SHORT_TEXT = 24


def table(title: str, columns: Sequence[str | Column], rows: Sequence[Sequence[Any]]) -> Table:
    """A table: numbers right-aligned, text left-aligned; short cells never wrap, so that
    long text columns narrow (wrapping at words) when the table is wider than the console.

    A :class:`rich.table.Column` given instead of a header keeps its own settings.
    """
    t = Table(title=title, title_justify="left")
    cells = [[fmt(v) for v in row] for row in rows]
    for i, column in enumerate(columns):
        values = [row[i] for row in rows if i < len(row)]
        if isinstance(column, Column):
            t.columns.append(copy(column))
        elif values and all(_is_number(v) or v is None for v in values):
            t.add_column(column, justify="right", no_wrap=True)
        else:
            longest = max((_width(row[i]) for row in cells if i < len(row)), default=0)
            t.add_column(column, justify="left", no_wrap=longest <= SHORT_TEXT)
    for row in cells:
        t.add_row(*row)
    return t


def _width(text: str) -> int:
    return max(map(len, text.splitlines()), default=0)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _role(match: re.Match[str]) -> str:
    """The text Sphinx shows for a reST role: its title, else its target (``~``: last part)."""
    content = match.group(1)
    if content.endswith(">") and "<" in content:
        return content[: content.rindex("<")].strip()
    return content[1:].rsplit(".", 1)[-1] if content.startswith("~") else content


_MARKUP: list[tuple[re.Pattern[str], Any]] = [
    (re.compile(r":[\w:.+-]+:`([^`]+)`"), _role),  # :class:`~a.B`, :ref:`title <target>`
    (re.compile(r"`([^`<]+?)\s*<[^>]+>`_{1,2}"), r"\1"),  # `title <url>`_
    (re.compile(r"``(.+?)``"), r"\1"),  # ``literal``
    (re.compile(r"`([^`]+)`_{0,2}"), r"\1"),  # `code`, `reference`_
    (re.compile(r"\[([^\]]+)\]\([^)\s]+\)"), r"\1"),  # [title](url)
    (re.compile(r"(?<![\w*])(\*{1,2})(?=\S)(.+?)(?<=\S)\1(?![\w*])"), r"\2"),  # *em*, **strong**
]


def plain_text(text: str) -> str:
    """``text`` without reST/markdown inline markup, its whitespace runs as single spaces."""
    for pattern, replacement in _MARKUP:
        text = pattern.sub(replacement, text)
    return " ".join(text.split())


def first_paragraph(doc: str | None) -> str:
    """The plain text of a docstring's first paragraph (its summary)."""
    return plain_text((doc or "").strip().split("\n\n")[0])


def progress_bar(quiet: bool = False) -> Progress:
    return Progress(
        TextColumn("{task.description}", markup=False, style="bold"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}", markup=False),
        console=err,
        disable=quiet,
        transient=False,
    )


def write_json(path: str | Path, data: Mapping[str, Any]) -> None:
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
