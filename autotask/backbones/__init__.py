"""Backbones by name: ``BACKBONES`` holds factories ``(input_shape, **params) -> Backbone``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autotask.backbones.base import Backbone
from autotask.errors import AutotaskError, ConfigError
from autotask.registry import Registry

__all__ = ["BACKBONES", "Backbone", "build_backbone", "list_backbones", "register_backbone"]

BackboneFactory = Callable[..., Backbone]
BACKBONES: Registry[BackboneFactory] = Registry("backbone")
register_backbone = BACKBONES.register


def _import_builtins() -> None:
    from autotask.backbones import cnn, dilated_resnet, mlp, resnet  # noqa: F401


def list_backbones(pattern: str = "*") -> list[str]:
    _import_builtins()
    return BACKBONES.names(pattern)


def build_backbone(name: str, input_shape: tuple[int, ...], **params: Any) -> Backbone:
    """Instantiate backbone ``name`` for inputs of ``input_shape`` (batch excluded)."""
    _import_builtins()
    factory = BACKBONES.get(name)
    try:
        return factory(tuple(input_shape), **params)
    except AutotaskError:
        raise
    except TypeError as exc:
        raise ConfigError(f"backbone {name!r}: bad parameters: {exc}") from None
