"""Imports every command module so that each registers its commands on ``app``."""

from autotask.cli import (  # noqa: F401
    affinity,
    dashboard,
    evaluate,
    listing,
    models,
    replay,
    report,
    search,
    select,
    studies,
    worker,
)
