"""Searchable values: a fixed value, a numeric range, or a list of choices."""

from __future__ import annotations

import math
from typing import Any

import optuna
from pydantic import BaseModel, ConfigDict, model_validator

__all__ = ["Choice", "Range", "Searchable", "default_of", "suggest"]

_STRICT = ConfigDict(frozen=True, extra="forbid")


class Range(BaseModel):
    """A numeric interval; ints when ``low``, ``high`` (and ``step``) are ints."""

    model_config = _STRICT

    low: float | int
    high: float | int
    log: bool = False
    step: float | int | None = None
    default: float | int | None = None

    @model_validator(mode="after")
    def _check(self) -> Range:
        if self.low > self.high:
            raise ValueError(f"range low={self.low} is above high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        if self.default is not None and not self.low <= self.default <= self.high:
            raise ValueError(f"default {self.default} lies outside [{self.low}, {self.high}]")
        return self

    @property
    def is_int(self) -> bool:
        return all(isinstance(v, int) for v in (self.low, self.high)) and (
            self.step is None or isinstance(self.step, int)
        )

    def midpoint(self) -> float | int:
        if self.default is not None:
            return self.default
        mid = math.sqrt(self.low * self.high) if self.log else (self.low + self.high) / 2
        return round(mid) if self.is_int else mid


class Choice(BaseModel):
    """A categorical choice; the default is ``default`` or the first choice."""

    model_config = _STRICT

    choices: list[Any]
    default: Any = None

    @model_validator(mode="after")
    def _check(self) -> Choice:
        if not self.choices:
            raise ValueError("choices must not be empty")
        if self.default is not None and self.default not in self.choices:
            raise ValueError(f"default {self.default!r} is not among the choices")
        return self


Searchable = Range | Choice | float | int | str | bool | None


def default_of(value: Searchable) -> Any:
    """The value used where nothing is searched (e.g. for single-task baselines)."""
    if isinstance(value, Range):
        return value.midpoint()
    if isinstance(value, Choice):
        return value.choices[0] if value.default is None else value.default
    return value


def suggest(trial: optuna.Trial, name: str, value: Searchable) -> Any:
    """Ask ``trial`` for ``name`` if ``value`` is searchable, else return it unchanged."""
    if isinstance(value, Range):
        if value.is_int:
            step = int(value.step or 1)
            return trial.suggest_int(
                name, int(value.low), int(value.high), step=step, log=value.log
            )
        return trial.suggest_float(name, value.low, value.high, step=value.step, log=value.log)
    if isinstance(value, Choice):
        if len(value.choices) == 1:
            return value.choices[0]
        return trial.suggest_categorical(name, value.choices)
    return value
