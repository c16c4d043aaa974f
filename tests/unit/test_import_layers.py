"""Imports point only downward through the package layers (README, "Development")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "autotask"

#: Each top-level part of the package and its layer; a module may import its own part and
#: parts of lower layers only. The single modules below 3 are the shared base.
LAYERS: dict[str, int] = {
    "errors": 0,
    "labels": 0,
    "contributions": 0,
    "interrupts": 0,
    "validation": 1,
    "registry": 1,
    "outputs": 1,
    "spec": 2,
    "backbones": 3,
    "suites": 3,
    "models": 4,
    "balancing": 5,
    "engine": 6,
    "select": 6,
    "store": 7,
    "affinity": 8,
    "trained": 8,
    "search": 9,
    "replay": 10,
    "report": 10,
    "cli": 11,
}
#: The package's entry points: not checked. ``autotask/__init__.py`` loads its public names
#: lazily, so importing from it (``__version__``) pulls nothing in.
TOP = {"__init__", "__main__"}
#: Third-party packages the pure combinatorics must not import.
SELECT_FORBIDDEN = {"torch", "optuna", "sqlalchemy"}


def _part(module: str) -> str:
    return module.split(".")[1] if module.count(".") else module


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every absolute module name ``path`` imports (also inside functions), with its line."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "autotask":  # ``from autotask import x``: x is a part
                found += [(node.lineno, f"autotask.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def _own_part(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def test_every_part_has_a_layer() -> None:
    parts = {_own_part(p) for p in _modules()} - TOP
    assert parts <= set(LAYERS), f"parts without a layer: {sorted(parts - set(LAYERS))}"


def test_imports_point_downward() -> None:
    upward = []
    for path in _modules():
        own = _own_part(path)
        if own in TOP:
            continue
        for line, name in _imports(path):
            if not name.startswith("autotask."):
                continue
            target = _part(name)
            if target == own or target not in LAYERS:  # not a part: a name of autotask/__init__
                continue
            if LAYERS[target] >= LAYERS[own]:
                where = path.relative_to(PACKAGE.parent)
                upward.append(f"{where}:{line} imports {name}")
    assert not upward, "imports that do not point downward:\n" + "\n".join(upward)


def test_select_is_pure() -> None:
    bad = []
    for path in (PACKAGE / "select").rglob("*.py"):
        for line, name in _imports(path):
            if name.split(".")[0] in SELECT_FORBIDDEN:
                bad.append(f"{path.name}:{line} imports {name}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", [PACKAGE / "select" / "matrix.py"], ids=["sample"])
def test_the_scanner_sees_function_level_imports(path: Path, tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from autotask.cli.app import app\n    import torch\n")
    assert _imports(probe) == [(2, "autotask.cli.app"), (3, "torch")]
    assert _imports(path)  # a real module is parsed
