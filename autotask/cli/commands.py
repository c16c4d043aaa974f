"""Imports every command module so that each registers its commands on ``app``."""

from autotask.cli import evaluate, listing, search, select  # noqa: F401
