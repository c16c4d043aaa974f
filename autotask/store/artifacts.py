"""Where a study's Optuna artifacts (figures, exported files) live on disk.

One convention, so that workers, the CLI and ``optuna-dashboard --artifact-dir`` agree:

- ``sqlite:///path/name.db``: the folder ``path/name.artifacts/`` next to the database;
- any other storage (PostgreSQL, in-memory SQLite): ``$AUTOTASK_ARTIFACTS``, by default
  ``./studies/artifacts``.

The folder is created on demand.
"""

from __future__ import annotations

import os
from pathlib import Path

from optuna.artifacts import FileSystemArtifactStore
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from autotask.errors import StorageError
from autotask.store.db import is_sqlite

__all__ = ["ARTIFACTS_ENV", "DEFAULT_ARTIFACTS_DIR", "artifact_dir_for", "artifact_store_for"]

ARTIFACTS_ENV = "AUTOTASK_ARTIFACTS"
DEFAULT_ARTIFACTS_DIR = Path("studies") / "artifacts"


def artifact_dir_for(storage_url: str) -> Path:
    """The artifact folder for ``storage_url`` (not created)."""
    if is_sqlite(storage_url):
        try:
            database = make_url(storage_url).database
        except ArgumentError:
            raise StorageError(f"not a database URL: {storage_url!r}") from None
        if database and database != ":memory:" and not database.startswith("file:"):
            path = Path(database)
            return path.with_name(path.stem + ".artifacts")
    return Path(os.environ.get(ARTIFACTS_ENV) or DEFAULT_ARTIFACTS_DIR)


def artifact_store_for(storage_url: str) -> FileSystemArtifactStore:
    """A file-system artifact store in :func:`artifact_dir_for`'s folder, created if needed."""
    folder = artifact_dir_for(storage_url)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create artifact folder {folder}: {exc}") from None
    return FileSystemArtifactStore(base_path=folder)
