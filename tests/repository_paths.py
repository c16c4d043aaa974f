"""Tests and benchmarks read and write only inside the repository (and temporary folders).

Two checks. :class:`OpenAudit` is an audit hook (:func:`sys.addaudithook`) that records
every file the test process opens outside the places a test may use: the repository,
the temporary folder, the Python installation (venv, site-packages), and ``/dev``,
``/proc``, ``/sys``, ``/etc``, ``/usr``. ``tests/conftest.py`` installs it and fails the
test that opened such a file. :func:`climbing_paths` scans source files for paths that
climb above the repository root (``..`` segments, ``Path(__file__).parents[k]`` or
``.parent`` chains past the root, absolute paths into other folders of this machine).
"""

from __future__ import annotations

import ast
import os
import re
import site
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
#: System folders a test may read (devices, kernel views, configuration, system files).
SYSTEM_ROOTS = ("/dev", "/proc", "/sys", "/etc", "/usr")
_DOTDOT = re.compile(r"(^|[/\\])\.\.([/\\]|$)")


def allowed_roots() -> tuple[str, ...]:
    """Folders (each ending in ``/``) under which a test may open files."""
    roots = {
        str(REPO),
        tempfile.gettempdir(),
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        *site.getsitepackages(),
        site.getusersitepackages(),
        *SYSTEM_ROOTS,
    }
    if os.environ.get("TMPDIR"):
        roots.add(os.environ["TMPDIR"])
    both = roots | {os.path.realpath(r) for r in roots}
    return tuple(sorted(r.rstrip("/") + "/" for r in both if r))


class OpenAudit:
    """Records ``(path, where)`` for each file opened outside :func:`allowed_roots`.

    The hook runs on every audit event of the process, so it returns at once for events
    other than ``open`` and otherwise does string prefix checks only.
    """

    def __init__(self, roots: Iterable[str] | None = None) -> None:
        self.roots = tuple(roots) if roots is not None else allowed_roots()
        self.outside: list[tuple[str, str]] = []
        self.where = "collection"
        self.enabled = True

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if event != "open" or not self.enabled:
            return
        path = args[0] if args else None
        if isinstance(path, os.PathLike):
            path = os.fspath(path)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str):  # a file descriptor, or nothing to check
            return
        if not path.startswith("/"):
            try:
                path = os.path.join(os.getcwd(), path)
            except OSError:  # the working folder is gone: the open fails on its own
                return
        if "/.." in path:
            path = os.path.normpath(path)
        if not (path + "/").startswith(self.roots):
            self.outside.append((path, self.where))

    def since(self, start: int) -> list[str]:
        """Paths recorded after the first ``start`` records, sorted, without repeats."""
        return sorted({path for path, _ in self.outside[start:]})


def climbing_paths(path: Path, root: Path = REPO) -> list[str]:
    """``line: reason`` for each place in a Python source that reaches above ``root``."""
    source = path.read_text()
    tree = ast.parse(source, str(path))
    depth = len(path.resolve().relative_to(root.resolve()).parts)  # climbs back to root
    climbs: dict[str, int] = {}  # names bound to Path(__file__)-relative folders
    found: list[str] = []

    def level(node: ast.AST) -> int | None:
        """How many folders above this file ``node`` is (None: not file-relative)."""
        if isinstance(node, ast.Name):
            return 0 if node.id == "__file__" else climbs.get(node.id)
        if isinstance(node, ast.Call):
            func, first = node.func, node.args[0] if node.args else None
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name in ("Path", "PurePath", "abspath", "realpath", "normpath") and first:
                return level(first)
            if name == "dirname" and first:
                base = level(first)
                return None if base is None else base + 1
            if name in ("resolve", "absolute") and isinstance(func, ast.Attribute):
                return level(func.value)
            return None
        if isinstance(node, ast.Attribute) and node.attr == "parent":
            base = level(node.value)
            return None if base is None else base + 1
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute):
            index = node.slice.value if isinstance(node.slice, ast.Constant) else None
            if node.value.attr == "parents" and isinstance(index, int):
                base = level(node.value.value)
                return None if base is None else base + index + 1
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                up = level(node.value)
                if up is not None:
                    climbs[target.id] = up
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if _DOTDOT.search(text) and not _between_repository_folders(text, root):
                found.append(f"{line}: {text!r} climbs with '..'")
            elif _foreign_absolute(text, root):
                found.append(f"{line}: {text!r} is an absolute path outside the repository")
        elif isinstance(node, ast.Attribute | ast.Subscript):
            up = level(node)
            if up is not None and up > depth:
                above = up - depth
                found.append(f"{line}: {ast.unparse(node)} is {above} folder(s) above the root")
    return sorted(set(found), key=lambda s: int(s.split(":")[0]))


def _between_repository_folders(text: str, root: Path) -> bool:
    """``../<folder>/...`` where ``<folder>`` is a top-level folder of the repository: a
    path from one repository folder to another (``../search_spaces/x.yaml`` in a study)."""
    parts = text.replace("\\", "/").split("/")
    return (
        len(parts) > 2
        and parts[0] == ".."
        and ".." not in parts[1:]
        and parts[1] not in ("", ".")
        and (root / parts[1]).is_dir()
    )


def _foreign_absolute(text: str, root: Path) -> bool:
    """An absolute path into an existing top-level folder of this machine that is neither
    the repository nor a folder a test may use."""
    if not text.startswith("/") or "\n" in text or " " in text:
        return False
    top = "/" + text.strip("/").split("/")[0]
    if top == "/" or not os.path.isdir(top):
        return False
    roots = (*allowed_roots(), str(root.resolve()) + "/")
    return not (text.rstrip("/") + "/").startswith(roots) and not any(
        r.startswith(text.rstrip("/") + "/") for r in roots
    )
