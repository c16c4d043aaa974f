"""Imports every command module so that each registers its commands on ``app``."""

from autotask.cli import affinity, evaluate, listing, search, select, worker  # noqa: F401
