"""Command-line interface (``autotask ...``)."""

from autotask.cli.app import app, main

__all__ = ["app", "main"]
