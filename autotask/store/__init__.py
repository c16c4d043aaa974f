"""Storage of autotask's own tables in the study database."""

from autotask.store.cache import DatabaseCache
from autotask.store.db import Database, default_storage_url

__all__ = [
    "Database",
    "DatabaseCache",
    "default_storage_url",
]
