"""Writing a report and its figures to files without clobbering anything by accident.

:func:`check_output` refuses a path that exists (unless ``force``) and, always, the study's
own database files; :func:`write_figures` writes each figure as ``<name>.html`` (plotly.js
once beside them, ``plotly.min.js``) and ``<name>.json`` (plotly's figure JSON).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import plotly.graph_objects as go
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from autotask.errors import ConfigError

__all__ = ["PLOTLY_JS", "check_output", "database_files", "write_figures"]

#: The plotly.js file written once beside the figures' HTML files.
PLOTLY_JS = "plotly.min.js"
#: Files SQLite keeps beside a database (journal, write-ahead log, shared memory).
_SQLITE_SIDECARS = ("", "-journal", "-wal", "-shm")


def database_files(storage_url: str) -> list[Path]:
    """The files of a SQLite database (with its journal and WAL files); none for a server."""
    try:
        url = make_url(storage_url)
    except ArgumentError:
        return []
    database = url.database
    if url.get_backend_name() != "sqlite" or database in (None, "", ":memory:"):
        return []
    assert database is not None
    return [Path(database + suffix) for suffix in _SQLITE_SIDECARS]


def check_output(path: Path, *, force: bool, storage_url: str | None = None) -> None:
    """Raise a one-line :class:`ConfigError` if ``path`` may not be written: it is one of
    the study database's files (never), a folder, or an existing file without ``force``."""
    if storage_url is not None:
        target = path.resolve()
        for protected in database_files(storage_url):
            if target == protected.resolve():
                raise ConfigError(f"{path} is the study database's file: choose another output")
    if path.is_dir():
        raise ConfigError(f"{path} is a folder: give a file name")
    if path.exists() and not force:
        raise ConfigError(f"{path} exists: pass --force to overwrite it")


def write_figures(
    figures: Mapping[str, go.Figure],
    folder: Path,
    *,
    force: bool = False,
    storage_url: str | None = None,
) -> list[Path]:
    """Write ``name -> figure`` as ``<name>.html`` and ``<name>.json`` in ``folder``, and
    plotly.js once beside them; returns the files written. Nothing is written when one of
    the figure files exists and ``force`` is not given."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder")
    names = sorted(figures)
    files = [folder / f"{name}.{kind}" for name in names for kind in ("html", "json")]
    for path in files:
        check_output(path, force=force, storage_url=storage_url)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        figure = figures[name]
        figure.write_html(folder / f"{name}.html", include_plotlyjs="directory", full_html=True)
        (folder / f"{name}.json").write_text(figure.to_json(), encoding="utf-8")
    return [*files, folder / PLOTLY_JS] if names else []
