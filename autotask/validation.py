"""Turning pydantic validation errors into one-line, user-facing messages."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ValidationError

from autotask.errors import closest

__all__ = ["format_validation_error"]


def format_validation_error(
    exc: ValidationError, source: str, models: Sequence[type[BaseModel]] = ()
) -> str:
    """``source: field.path: message``; unknown keys get the closest valid key suggested."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        key = str(err["loc"][-1])
        fields = {f for m in models for f in m.model_fields}
        hint = closest(key, fields)
        msg = f"unknown key {key!r}" + (f" (did you mean {hint!r}?)" if hint else "")
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{source}: {loc}: {msg}{more}"
