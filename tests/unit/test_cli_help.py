"""The command line's help, version and listings: in-process, nothing trained."""

from __future__ import annotations

import inspect
import re

import pytest
from rich.table import Column

import autotask
from autotask.affinity.estimators import list_estimators
from autotask.cli import app, main
from autotask.cli import commands as _commands  # noqa: F401 - registers the commands
from autotask.cli.affinity import ESTIMATOR_NAMES
from autotask.cli.console import first_paragraph, plain_text, table

COMMANDS = sorted(info.name or info.callback.__name__ for info in app.registered_commands)  # type: ignore[union-attr]


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.out, captured.err


@pytest.fixture(autouse=True)
def _eighty_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")


def test_every_command_is_listed() -> None:
    assert COMMANDS == [
        "affinity",
        "balancers",
        "dashboard",
        "evaluate",
        "export",
        "inspect",
        "replay",
        "report",
        "search",
        "select",
        "status",
        "studies",
        "suites",
        "train",
        "worker",
    ]


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)])
def test_help_has_short_alias_and_no_type_tag_on_flags(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, long_help, _ = run([*command, "--help"], capsys)
    assert code == 0
    assert run([*command, "-h"], capsys) == (0, long_help, "")
    assert "<bool>" not in long_help
    assert re.search(r"--help\s+-h\s+Show this message and exit\.", long_help)
    assert "the file's name" not in long_help
    assert "Usage: autotask" in long_help


def test_flags_show_no_type_but_options_do(capsys: pytest.CaptureFixture[str]) -> None:
    _, text, _ = run(["status", "-h"], capsys)
    assert re.search(r"--json\s+Print JSON", text)  # a flag: nothing between name and help
    assert re.search(r"--storage\s+<str>\s+SQLAlchemy URL", text)
    assert "STUDY_NAME" in text  # arguments in capitals


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--version"], capsys) == (0, f"autotask {autotask.__version__}\n", "")


def test_each_command_summary_is_one_line_of_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    _, text, _ = run(["--help"], capsys)
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "Commands" in line)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("╰"))
    rows = lines[start + 1 : end]
    names = [row[2:].split(" ", 1)[0] for row in rows]
    assert sorted(names) == COMMANDS  # no continuation lines: one line per command


def test_study_name_default_is_the_yaml_name() -> None:
    callbacks = {info.callback.__name__: info.callback for info in app.registered_commands}  # type: ignore[union-attr]
    for command in ("search", "worker", "affinity"):
        option = inspect.signature(callbacks[command]).parameters["study_name"].default
        assert option.help == "Study name (default: the YAML's name: key)."


def test_affinity_help_names_every_registered_estimator() -> None:
    assert list(ESTIMATOR_NAMES) == list_estimators()


def test_table_aligns_numbers_right_and_text_left() -> None:
    t = table(
        "t",
        ["name", "count", "share", "note", Column("fixed", justify="center")],
        [("a", 1, 0.5, "short", "x"), ("b", None, 2.0, "x" * 40, "y")],
    )
    assert [c.justify for c in t.columns] == ["left", "right", "right", "left", "center"]
    assert [c.no_wrap for c in t.columns[:4]] == [True, True, True, False]


def test_booleans_are_text_not_numbers() -> None:
    t = table("t", ["flag"], [(True,), (False,)])
    assert t.columns[0].justify == "left"


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("one ``binary`` task per attribute", "one binary task per attribute"),
        (
            "see :class:`~autotask.spec.TaskTree` or :func:`build_model`",
            "see TaskTree or build_model",
        ),
        (":ref:`the guide <guide>`", "the guide"),
        (
            "`code` and [docs](https://example.org) and `Link <https://a.b>`_",
            "code and docs and Link",
        ),
        ("*em* and **strong**", "em and strong"),
        ("k*softmax(x), 2 * 3 and __init__ stay", "k*softmax(x), 2 * 3 and __init__ stay"),
        ("wrapped\n    over  lines", "wrapped over lines"),
    ],
)
def test_plain_text_strips_inline_markup(text: str, plain: str) -> None:
    assert plain_text(text) == plain


def test_first_paragraph() -> None:
    assert first_paragraph("Summary ``x``\n    goes on.\n\n    Details.") == "Summary x goes on."
    assert first_paragraph(None) == ""


def test_suites_are_listed_left_aligned_without_markup(capsys: pytest.CaptureFixture[str]) -> None:
    code, text, _ = run(["suites"], capsys)
    assert code == 0
    assert "``" not in text
    assert re.search(r"│ celeba\s+│ CelebA from a local copy", text)  # starts at the left


def test_balancers_fold_defaults_into_the_description(capsys: pytest.CaptureFixture[str]) -> None:
    code, text, _ = run(["balancers", "gradnorm"], capsys)
    assert code == 0
    assert re.search(r"│ gradnorm\s+│ loss\s+│ autotask\s+│ 1\.6x", text)
    assert "defaults: alpha=1.5" in text
    assert all(len(line) <= 80 for line in text.splitlines())
