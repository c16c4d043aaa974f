"""Where a study's Optuna artifacts (figures, kept network weights) live.

One convention, so that workers, the CLI and ``optuna-dashboard --artifact-dir`` agree:

- ``$AUTOTASK_ARTIFACTS=s3://bucket[/prefix]``: S3-compatible object storage, for any
  database (Optuna's ``Boto3ArtifactStore``; needs ``boto3``, the ``s3`` extra). The
  endpoint and credentials come from boto3's own configuration (``AWS_ENDPOINT_URL``,
  ``AWS_ACCESS_KEY_ID``, ``~/.aws/credentials`` ...), never from autotask's files;
- ``sqlite:///path/name.db``: the folder ``path/name.artifacts/`` next to the database;
- any other storage (PostgreSQL, in-memory SQLite): ``$AUTOTASK_ARTIFACTS``, by default
  ``./studies/artifacts``.

A folder is created on demand.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Protocol

from optuna.artifacts import FileSystemArtifactStore
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from autotask.errors import ConfigError, StorageError
from autotask.store.db import is_sqlite

__all__ = [
    "ARTIFACTS_ENV",
    "DEFAULT_ARTIFACTS_DIR",
    "ArtifactStore",
    "PrefixedArtifactStore",
    "artifact_dir_for",
    "artifact_store_for",
]

ARTIFACTS_ENV = "AUTOTASK_ARTIFACTS"
DEFAULT_ARTIFACTS_DIR = Path("studies") / "artifacts"
_S3 = "s3://"


class ArtifactStore(Protocol):
    """What autotask uses of an Optuna artifact store (file system, S3, GCS, ...)."""

    def open_reader(self, artifact_id: str) -> BinaryIO: ...

    def write(self, artifact_id: str, content_body: BinaryIO) -> None: ...

    def remove(self, artifact_id: str) -> None: ...


class PrefixedArtifactStore:
    """Another store's artifacts under ``prefix/`` (a folder of a shared bucket)."""

    def __init__(self, store: ArtifactStore, prefix: str) -> None:
        self.store = store
        self.prefix = prefix.strip("/")

    def _id(self, artifact_id: str) -> str:
        return f"{self.prefix}/{artifact_id}" if self.prefix else artifact_id

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self.store.open_reader(self._id(artifact_id))

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.store.write(self._id(artifact_id), content_body)

    def remove(self, artifact_id: str) -> None:
        self.store.remove(self._id(artifact_id))


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


def _s3_store(location: str) -> ArtifactStore:
    bucket, _, prefix = location[len(_S3) :].partition("/")
    if not bucket:
        raise ConfigError(f"${ARTIFACTS_ENV}: expected s3://bucket[/prefix], got {location!r}")
    try:
        from optuna.artifacts import Boto3ArtifactStore

        store = Boto3ArtifactStore(bucket)
    except ImportError:
        raise ConfigError(
            f"${ARTIFACTS_ENV}={location} needs boto3: pip install 'autotask[s3]'"
        ) from None
    return PrefixedArtifactStore(store, prefix)


def artifact_store_for(storage_url: str) -> ArtifactStore:
    """The artifact store for ``storage_url``: S3 when ``$AUTOTASK_ARTIFACTS`` names a
    bucket, else a file-system store in :func:`artifact_dir_for`'s folder (created)."""
    location = os.environ.get(ARTIFACTS_ENV, "")
    if location.startswith(_S3):
        return _s3_store(location)
    folder = artifact_dir_for(storage_url)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create artifact folder {folder}: {exc}") from None
    return FileSystemArtifactStore(base_path=folder)
