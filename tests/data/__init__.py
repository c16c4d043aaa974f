"""Data files kept with the tests (``papers/README.md`` says where each table comes from)."""

from __future__ import annotations

from pathlib import Path

#: Published task-grouping tables: ``standley/results*.txt`` and ``tag/matrices.json``.
PAPERS = Path(__file__).resolve().parent / "papers"
STANDLEY = PAPERS / "standley"
TAG_MATRICES = PAPERS / "tag" / "matrices.json"
MTGNET = PAPERS / "mtgnet"
