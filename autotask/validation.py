"""Turning pydantic validation errors into one-line, user-facing messages."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from autotask.errors import ConfigError, closest

__all__ = ["format_validation_error", "read_yaml_mapping"]


def read_yaml_mapping(path: str | Path, what: str = "file") -> dict[str, Any]:
    """The mapping at the top of a YAML file; a missing file, malformed YAML or another
    top-level type is a one-line :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such {what}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: malformed YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _printable(part: str) -> str:
    """A location part on one line: names with line breaks or other control characters
    as their Python literal."""
    return part if part.isprintable() else repr(part)


def format_validation_error(
    exc: ValidationError, source: str, models: Sequence[type[BaseModel]] = ()
) -> str:
    """``source: field.path: message``; unknown keys get the closest valid key suggested."""
    err = exc.errors()[0]
    loc = ".".join(_printable(str(p)) for p in err["loc"]) or "(top level)"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        loc = ".".join(_printable(str(p)) for p in err["loc"][:-1]) or "(top level)"
        key = str(err["loc"][-1])
        fields = {f for m in models for f in m.model_fields}
        hint = closest(key, fields)
        msg = f"unknown key {key!r}" + (f" (did you mean {hint!r}?)" if hint else "")
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{source}: {loc}: {msg}{more}"
