"""What a user's browser shows: ``autotask dashboard`` and the HTML report in headless Chromium.

Chromium is driven from the command line (``--dump-dom`` after ``--virtual-time-budget``, so
the single-page app has rendered; ``--screenshot``). If it is missing it is installed with
apt-get when running as root; otherwise the tests are skipped. Screenshots go to ``tmp_path``
and, when ``$AUTOTASK_TEST_ARTIFACTS`` names a folder, are copied there too.
"""

from __future__ import annotations

import html
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import optuna
import pytest

from autotask.report.publish import published_figures
from autotask.search.confirmed import load_confirmation
from tests.integration.cli_runner import run_cli

pytestmark = pytest.mark.slow  # about 45 s: a search, a dashboard and six Chromium runs

NAME = "browser-seeded"
STUDY = f"""
name: {NAME}
suite: {{name: synthetic, n_tasks: 4, n_groups: 2, n_samples: 600, seed: 0}}
search_space:
  partition: {{max_groups: 3}}
  branching: {{depths: [null]}}
  balancers: [{{name: equal}}]
  optimizer: {{lr: 0.003, epochs: 6, batch_size: 128, patience: 3}}
trials: 4
seed: 0
affinity: {{estimator: gradcos, candidates: 2}}
"""
FIGURES = {
    "affinity-gradcos-heatmap",
    "affinity-gradcos-graph",
    "best-architecture",
    "quality-vs-cost",
}
ARTIFACTS_ENV = "AUTOTASK_TEST_ARTIFACTS"
#: Headless flags that work in containers (no sandbox, GPU, network chatter or first-run UI).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--virtual-time-budget=15000",
    "--window-size=1400,1000",
]
INSTALL_TIMEOUT = 180
#: Put first in a page's <head>: records script errors, failed loads and console.error calls
#: in the ``data-console-errors`` attribute of <html>, and ``data-loaded`` after ``load``.
ERROR_HOOK = """<script>
(function () {
  var root = document.documentElement, errors = [];
  function keep(text) {
    errors.push(String(text));
    root.setAttribute("data-console-errors", JSON.stringify(errors));
  }
  root.setAttribute("data-console-errors", "[]");
  window.addEventListener("error", function (e) {
    var t = e.target;
    keep(e.message || "failed to load " + ((t && (t.src || t.href)) || "a resource"));
  }, true);
  window.addEventListener("unhandledrejection", function (e) { keep("rejection: " + e.reason); });
  var original = console.error;
  console.error = function () {
    keep(Array.prototype.join.call(arguments, " "));
    return original.apply(console, arguments);
  };
  window.addEventListener("load", function () { root.setAttribute("data-loaded", "1"); });
})();
</script>
"""


def _find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _install_chromium() -> str:
    """Why Chromium could not be installed ('' if the attempt ran to the end)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "not root"
    if shutil.which("apt-get") is None:
        return "no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        done = subprocess.run(
            ["sh", "-c", "apt-get update && apt-get install -y chromium"],
            env=env,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return f"apt-get took over {INSTALL_TIMEOUT} s"
    lines = done.stderr.strip().splitlines()
    return "" if done.returncode == 0 else f"apt-get failed: {lines[-1] if lines else '?'}"


@pytest.fixture(scope="module")
def chromium() -> str:
    """The Chromium executable, installed on first use where possible."""
    found = _find_chromium()
    if found is None:
        why = _install_chromium()
        found = _find_chromium()
        if found is None:
            reason = f"no Chromium and it could not be installed ({why or 'not found after apt'})"
            print(reason)
            pytest.skip(reason)
    return found


def _browse(
    chromium: str, profile: Path, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium once with a fresh profile folder."""
    profile.mkdir(parents=True)
    run = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run


def _text(dom: str) -> str:
    """The visible text of a dumped DOM, whitespace collapsed."""
    dom = re.sub(r"<(script|style)\b[^>]*>.*?</\1>", " ", dom, flags=re.S | re.I)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.load(answer)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _keep_artifact(path: Path) -> None:
    folder = os.environ.get(ARTIFACTS_ENV)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / path.name)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a finished, affinity-seeded study (figures published to the dashboard)."""
    folder = tmp_path_factory.mktemp("browser")
    (folder / "study.yaml").write_text(STUDY)
    run = run_cli("search", "study.yaml", "--quiet", cwd=folder)
    assert run.returncode == 0, run.stderr
    return folder


def _wait_until_serving(proc: subprocess.Popen[bytes], base: str, log: Path) -> list[Any]:
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the dashboard exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            summaries: list[Any] = _get_json(f"{base}/api/studies")["study_summaries"]
            return summaries
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                pytest.fail(f"the dashboard did not answer in 60 s: {log.read_text()[-2000:]}")
            time.sleep(0.3)


def test_the_dashboard_shows_trials_and_figures(chromium: str, root: Path, tmp_path: Path) -> None:
    study = optuna.load_study(study_name=NAME, storage=f"sqlite:///{root}/studies/{NAME}.db")
    figures = published_figures(study)
    assert set(figures) >= FIGURES
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    stdout, stderr = tmp_path / "dashboard.out", tmp_path / "dashboard.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "autotask", "dashboard", NAME, "--port", str(port)],
            cwd=root,
            env={**os.environ, "AUTOTASK_THREADS": "1"},
            stdout=out,
            stderr=err,
        )
    try:
        summaries = _wait_until_serving(proc, base, stderr)
        (study_id,) = [s["study_id"] for s in summaries if s["study_name"] == NAME]
        page = f"{base}/dashboard/studies/{study_id}"
        assert page in stdout.read_text()

        # the dashboard's own data: the trials, the published figures, the artifacts
        data = _get_json(f"{base}/api/studies/{study_id}")
        assert len(data["trials"]) == 4
        assert {g["id"] for g in data["plotly_graph_objects"]} == set(figures)
        artifact = data["artifacts"][0]
        with urllib.request.urlopen(
            f"{base}/artifacts/{study_id}/{artifact['artifact_id']}", timeout=10
        ) as answer:
            assert json.loads(answer.read())["data"], "the artifact store serves the figure"

        # the study page, rendered: the study, its best trial, every figure and artifact
        dom = _browse(chromium, tmp_path / "p1", "--dump-dom", page).stdout
        text = _text(dom)
        assert f"{NAME} (id={study_id})" in text
        assert f"Best Trial (number={study.best_trial.number})" in text
        # 3 built-in charts (history, importance, timeline) + the published figures
        assert dom.count('class="plot-container') >= 3 + len(figures)
        for name, figure in figures.items():
            title = (figure.get("layout", {}).get("title") or {}).get("text")
            if title:  # plotly markup (<br>, <span>): each line is its own text element
                title = " ".join(re.sub(r"<[^>]+>", " ", html.unescape(title)).split())
                assert title in text, f"figure {name} ({title!r}) is not rendered"
        assert "Task affinity (gradcos)" in text and "Task affinity graph (gradcos)" in text
        # the study's short labels and its note: best architecture, Δm in %, export command
        for key in ("suite", "objectives", "seed", "best"):
            assert key in text
        assert "autotask:config" not in text
        confirmation = load_confirmation(study)
        assert confirmation is not None  # the search confirmed its best over seeds
        chosen = next(t for t in study.trials if t.number == confirmation.best.trial)
        best = chosen.user_attrs
        label = f"best trial {chosen.number}: Δm val {confirmation.best.delta_m_val.describe()}"
        assert f"{label} (confirmed)" in text
        assert "Δm (%)" in text  # the objective's name with its unit
        assert data["note"]["body"].startswith("**Best architecture**")
        note = _text(_browse(chromium, tmp_path / "p4", "--dump-dom", f"{page}/note").stdout)
        assert best["architecture"].split("  ")[0] in note
        assert f"{best['delta_m_val']:+.2f}% val" in note
        assert f"autotask export {NAME}" in note
        for a in data["artifacts"]:
            assert a["filename"] in text

        # the trial list
        text = _text(_browse(chromium, tmp_path / "p2", "--dump-dom", f"{page}/trials").stdout)
        assert "4 Trials" in text
        for trial in study.trials:
            assert f"Trial {trial.number} Complete" in text

        shot = tmp_path / "dashboard.png"
        _browse(chromium, tmp_path / "p3", f"--screenshot={shot}", page)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
        _keep_artifact(shot)

        busy = run_cli("dashboard", NAME, "--port", str(port), cwd=root)
        assert busy.returncode == 2 and "already in use" in busy.stderr
        assert len(busy.stderr.strip().splitlines()) == 1

        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=30) == 0, stderr.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_missing_study_is_one_line(root: Path) -> None:
    run = run_cli("dashboard", "nope", "--port", str(_free_port()), cwd=root)
    assert run.returncode == 2 and "no study 'nope'" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def _console_errors(chromium: str, page: Path, profile: Path) -> tuple[list[str], str]:
    """Errors a local HTML page raises in Chromium, and its rendered DOM."""
    source = page.read_text(encoding="utf-8")
    hooked, found = re.subn(
        r"<head\b[^>]*>", lambda m: m.group(0) + ERROR_HOOK, source, count=1, flags=re.I
    )
    target = page.with_name(f"hooked-{page.name}")
    target.write_text(hooked if found else ERROR_HOOK + source, encoding="utf-8")
    run = _browse(
        chromium, profile, "--enable-logging=stderr", "--v=0", "--dump-dom", target.as_uri()
    )
    dom = run.stdout
    assert 'data-loaded="1"' in dom, "the page never finished loading"
    attribute = re.search(r'data-console-errors="([^"]*)"', dom)
    assert attribute is not None, "the error hook did not run"
    errors: list[str] = json.loads(html.unescape(attribute.group(1)))
    logged = [line for line in run.stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line]
    return errors + logged, dom


def _report_page(root: Path, tmp_path: Path) -> Path:
    """``autotask report`` of the study, or a plain plotly page where that command is absent."""
    page = tmp_path / "report.html"
    if importlib.util.find_spec("autotask.cli.report") is not None:
        run = run_cli("report", NAME, "-o", str(page), cwd=root)
        assert run.returncode == 0, run.stderr
    else:
        import plotly.graph_objects as go

        figure = go.Figure(go.Heatmap(z=[[1, 0.5], [0.5, 1]]), layout={"title": "affinity"})
        figure.write_html(page, include_plotlyjs=True)
    return page


def test_a_local_report_has_no_console_errors(chromium: str, root: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text(
        "<html><head></head><body><script>console.error('boom'); missing();</script></body></html>"
    )
    errors, _ = _console_errors(chromium, broken, tmp_path / "p1")
    assert any("boom" in e for e in errors) and any("missing" in e for e in errors), errors

    page = _report_page(root, tmp_path)
    errors, dom = _console_errors(chromium, page, tmp_path / "p2")
    assert errors == []
    if "Plotly.newPlot" in page.read_text(encoding="utf-8"):
        assert "js-plotly-plot" in dom, "plotly did not draw the report's figures"
    shot = tmp_path / "report.png"
    _browse(chromium, tmp_path / "p3", f"--screenshot={shot}", page.as_uri())
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _keep_artifact(shot)
