"""Writing a report's figures to files without clobbering anything by accident
(:func:`autotask.outputs.check_outputs`).

:func:`write_figures` writes each figure as ``<name>.html`` (plotly.js
once beside them, ``plotly.min.js``) and ``<name>.json`` (plotly's figure JSON).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import plotly.graph_objects as go

from autotask.errors import ConfigError
from autotask.outputs import check_outputs

__all__ = ["PLOTLY_JS", "write_figures"]

#: The plotly.js file written once beside the figures' HTML files.
PLOTLY_JS = "plotly.min.js"


def write_figures(
    figures: Mapping[str, go.Figure],
    folder: Path,
    *,
    force: bool = False,
    storage_url: str | None = None,
) -> list[Path]:
    """Write ``name -> figure`` as ``<name>.html`` and ``<name>.json`` in ``folder``, and
    plotly.js once beside them; returns the files written. Nothing is written when one of
    the figure files exists and ``force`` is not given."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder")
    names = sorted(figures)
    files = [folder / f"{name}.{kind}" for name in names for kind in ("html", "json")]
    check_outputs(files, force=force, storage_url=storage_url)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        figure = figures[name]
        figure.write_html(folder / f"{name}.html", include_plotlyjs="directory", full_html=True)
        (folder / f"{name}.json").write_text(figure.to_json(), encoding="utf-8")
    return [*files, folder / PLOTLY_JS] if names else []
