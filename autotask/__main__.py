"""``python -m autotask`` runs the CLI."""

from autotask.cli import main

main()
