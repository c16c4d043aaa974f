"""Where a search and its workers train: ``--gpus`` indices count within an inherited
``CUDA_VISIBLE_DEVICES``, workers spread over several GPUs, the search itself on the first
GPU listed, and ``cuda:N`` made the current device. No GPU needed: torch.cuda is mocked and
no worker process starts."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from autotask.cli import search as search_cli
from autotask.engine.cache import MemoryCache
from autotask.engine.device import pick_device
from autotask.engine.runner import Runner
from autotask.errors import ConfigError
from autotask.search import run as run_module
from autotask.search.backend import launcher
from autotask.search.backend.launcher import (
    STORAGE_ENV,
    VISIBLE_DEVICES_ENV,
    WorkerPool,
    parse_gpus,
    physical_gpus,
    plan_placement,
    visible_devices,
    worker_environments,
)
from tests.conftest import make_tiny_suite

URL = "sqlite:///studies/s.db"
UUIDS = "GPU-8a1f0c2e-1111-2222-3333-444455556666,MIG-5b2e9d7f-aaaa-bbbb-cccc-ddddeeeeffff"


def test_gpus_are_indices_and_may_repeat() -> None:
    assert parse_gpus("0, 1,3") == ["0", "1", "3"]
    assert parse_gpus("0,0") == ["0", "0"]  # two workers share GPU 0
    assert parse_gpus(None) == []
    for bad in ("a", "", "-1", "GPU-1"):
        with pytest.raises(ConfigError, match="--gpus"):
            parse_gpus(bad)


@pytest.mark.parametrize(
    ("mask", "visible"),
    [
        ("2,3", ["2", "3"]),
        (" 2, 3 ", ["2", "3"]),
        (UUIDS, UUIDS.split(",")),
        ("", []),
        ("-1", []),  # the usual way to hide every GPU
        ("0,1,-1,2", ["0", "1"]),  # CUDA stops at the first invalid entry
    ],
)
def test_visible_devices_read_the_inherited_mask(mask: str, visible: list[str]) -> None:
    assert visible_devices({VISIBLE_DEVICES_ENV: mask}) == visible


def test_no_mask_means_every_gpu_is_visible() -> None:
    assert visible_devices({}) is None
    assert physical_gpus(["1", "0"], {}) == ["1", "0"]


@pytest.mark.parametrize(
    ("mask", "gpus", "physical"),
    [
        ("2,3", ["0", "1"], ["2", "3"]),  # Slurm gave us 2 and 3: --gpus 0,1 lands there
        ("2,3", ["1", "0"], ["3", "2"]),
        ("2,3", ["1", "1"], ["3", "3"]),
        ("5", ["0", "0"], ["5", "5"]),
        (UUIDS, ["1", "0"], UUIDS.split(",")[::-1]),
    ],
)
def test_gpu_indices_map_through_the_inherited_mask(
    mask: str, gpus: list[str], physical: list[str]
) -> None:
    inherited = {VISIBLE_DEVICES_ENV: mask, "LANG": "C.UTF-8"}
    envs = worker_environments(gpus, inherited, workers=1, storage_url=URL)
    assert [env[VISIBLE_DEVICES_ENV] for env in envs] == physical
    assert all(env[STORAGE_ENV] == URL and env["LANG"] == "C.UTF-8" for env in envs)
    assert inherited == {VISIBLE_DEVICES_ENV: mask, "LANG": "C.UTF-8"}  # not modified


def test_an_index_beyond_the_visible_gpus_names_them() -> None:
    with pytest.raises(ConfigError, match=r"--gpus 2: .*sees 2 GPU") as info:
        worker_environments(["0", "2"], {VISIBLE_DEVICES_ENV: "2,3"}, workers=1, storage_url=URL)
    assert "CUDA_VISIBLE_DEVICES='2,3'" in str(info.value)
    assert "0 is 2, 1 is 3" in str(info.value)
    with pytest.raises(ConfigError, match="GPU-8a1f"):
        physical_gpus(["2"], {VISIBLE_DEVICES_ENV: UUIDS})
    with pytest.raises(ConfigError, match="sees no GPU"):
        physical_gpus(["0"], {VISIBLE_DEVICES_ENV: "-1"})
    with pytest.raises(ConfigError, match=r"--gpus 2: .*sees 2 GPU\(s\), --gpus 0 to 1"):
        physical_gpus(["2"], {}, device_count=2)
    # a mask naming more GPUs than exist is bounded by what CUDA counts
    with pytest.raises(ConfigError, match="--gpus 1"):
        physical_gpus(["1"], {VISIBLE_DEVICES_ENV: "2,3"}, device_count=1)


def test_workers_without_gpus_inherit_the_mask_unchanged() -> None:
    envs = worker_environments([], {VISIBLE_DEVICES_ENV: "2,3"}, workers=3, storage_url=URL)
    assert len(envs) == 3
    assert all(env[VISIBLE_DEVICES_ENV] == "2,3" for env in envs)


@pytest.mark.parametrize("count", [2, 3, 4])
def test_workers_spread_round_robin_over_several_gpus(count: int) -> None:
    placement = plan_placement([], 5, None, {}, count)
    assert placement.gpus == [str(j % count) for j in range(5)]
    assert placement.parent_device == "cuda:0"
    assert placement.note is not None and "round-robin" in placement.note


def test_spread_workers_land_on_the_inherited_gpus() -> None:
    placement = plan_placement([], 3, None, {VISIBLE_DEVICES_ENV: UUIDS}, 2)
    envs = worker_environments(
        placement.gpus, {VISIBLE_DEVICES_ENV: UUIDS}, workers=3, storage_url=URL
    )
    first, second = UUIDS.split(",")
    assert [env[VISIBLE_DEVICES_ENV] for env in envs] == [first, second, first]


@pytest.mark.parametrize("count", [0, 1])
def test_one_gpu_or_none_leaves_the_workers_alone(count: int) -> None:
    placement = plan_placement([], 3, None, {}, count)
    assert (placement.gpus, placement.parent_device, placement.note) == ([], None, None)


def test_an_explicit_device_is_every_workers() -> None:
    cuda = plan_placement([], 3, "cuda:1", {}, 4)
    assert (cuda.gpus, cuda.parent_device, cuda.note) == (["1", "1", "1"], "cuda:1", None)
    assert plan_placement([], 2, "cuda", {}, 4).gpus == ["0", "0"]
    cpu = plan_placement([], 2, "cpu", {}, 4)
    assert (cpu.gpus, cpu.parent_device, cpu.worker_device) == ([], "cpu", "cpu")
    single = plan_placement([], 1, "cuda:1", {}, 4)  # no pool: the search alone
    assert (single.gpus, single.parent_device) == ([], "cuda:1")


def test_the_search_itself_trains_on_the_first_gpu_listed() -> None:
    placement = plan_placement(["2", "3"], 1, None, {}, 4)
    assert (placement.gpus, placement.parent_device) == (["2", "3"], "cuda:2")
    # an index into the visible GPUs: under CUDA_VISIBLE_DEVICES=2,3, cuda:1 is physical 3
    placement = plan_placement(["1", "0"], 1, None, {VISIBLE_DEVICES_ENV: "2,3"}, 2)
    assert placement.parent_device == "cuda:1"
    with pytest.raises(ConfigError, match="CUDA is not available"):
        plan_placement(["0"], 1, None, {}, 0)
    with pytest.raises(ConfigError, match="--gpus 2"):
        plan_placement(["0", "2"], 1, None, {VISIBLE_DEVICES_ENV: "2,3"}, 2)


class _Recorded:
    """A ``subprocess.Popen`` that records what it was asked to start."""

    started: ClassVar[list[tuple[list[str], dict[str, str]]]] = []

    def __init__(self, cmd: list[str], env: dict[str, str], **_: Any) -> None:
        self.started.append((cmd, env))


def test_the_pool_starts_a_worker_per_entry_on_its_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _Recorded.started = []
    monkeypatch.setattr("autotask.search.backend.launcher.subprocess.Popen", _Recorded)
    monkeypatch.setenv(VISIBLE_DEVICES_ENV, "2,3")
    pool = WorkerPool(tmp_path / "s.yaml", URL, "s", trials=4, workers=1, gpus=["1", "0", "1"])
    pool.start()
    pool.close()
    assert [env[VISIBLE_DEVICES_ENV] for _, env in _Recorded.started] == ["3", "2", "3"]
    for cmd, _ in _Recorded.started:
        assert cmd[cmd.index("--device") + 1] == "cuda"


def test_a_bad_index_starts_no_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _Recorded.started = []
    monkeypatch.setattr("autotask.search.backend.launcher.subprocess.Popen", _Recorded)
    monkeypatch.setenv(VISIBLE_DEVICES_ENV, "2,3")
    pool = WorkerPool(tmp_path / "s.yaml", URL, "s", trials=4, workers=1, gpus=["0", "5"])
    with pytest.raises(ConfigError, match="--gpus 5"):
        pool.start()
    assert _Recorded.started == []


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """torch.cuda mocked to two visible devices; the devices ``set_device`` was given."""
    chosen: list[object] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.delenv("AUTOTASK_DEVICE", raising=False)
    return chosen


def test_an_indexed_cuda_device_becomes_the_current_one(two_gpus: list[object]) -> None:
    assert pick_device("cuda:1") == torch.device("cuda:1")
    assert two_gpus == [1]
    assert pick_device("cuda") == torch.device("cuda")  # no index: nothing to set
    assert pick_device() == torch.device("cuda")
    assert two_gpus == [1]


def test_a_cuda_index_beyond_the_visible_devices_is_a_config_error(
    two_gpus: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match=r"'cuda:2' .* sees 2 CUDA device\(s\), cuda:0 to cuda:1"):
        pick_device("cuda:2")
    monkeypatch.setenv(VISIBLE_DEVICES_ENV, "4,5")
    with pytest.raises(ConfigError, match="CUDA_VISIBLE_DEVICES='4,5'"):
        pick_device("cuda:3")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ConfigError, match="sees no CUDA device"):
        pick_device("cuda:0")
    assert two_gpus == []


def test_the_cli_spreads_workers_over_the_visible_gpus(
    two_gpus: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VISIBLE_DEVICES_ENV, "2,3")
    placement = search_cli.place_search([], 3, None)
    assert (placement.gpus, placement.parent_device) == (["0", "1", "0"], "cuda:0")
    monkeypatch.setenv("AUTOTASK_DEVICE", "cuda:1")  # counts as --device
    assert search_cli.place_search([], 3, None).gpus == ["1", "1", "1"]
    assert search_cli.place_search([], 3, "cpu").worker_device == "cpu"


class _Opened(Exception):
    """Stops ``search`` where it would open the study."""


def _search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **options: Any
) -> tuple[dict[str, Any], dict[str, str | None]]:
    """Run the ``search`` command up to ``run_study``: its arguments and the worker device
    the environment held then."""
    monkeypatch.chdir(tmp_path)
    study = tmp_path / "s.yaml"
    study.write_text(
        json.dumps(
            {
                "name": "s",
                "suite": {"name": "tests.conftest:make_tiny_suite"},
                "search_space": {"partition": {"max_groups": 1}},
                "trials": 1,
            }
        )
    )
    seen: dict[str, str | None] = {}

    def run_study(config: Any, events: Any, **kwargs: Any) -> Any:
        seen["AUTOTASK_DEVICE"] = os.environ.get("AUTOTASK_DEVICE")
        raise _Opened(kwargs)

    monkeypatch.setattr(run_module, "run_study", run_study)
    arguments: dict[str, Any] = {
        "storage": None,
        "study_name": None,
        "trials": None,
        "timeout": None,
        "seed": None,
        "device": None,
        "workers": 1,
        "gpus": None,
        "quiet": True,
        "json_out": False,
        **options,
    }
    with pytest.raises(_Opened) as info:
        search_cli.search(study, **arguments)
    kwargs: dict[str, Any] = info.value.args[0]
    return kwargs, seen


def test_search_with_gpus_trains_itself_on_the_first(
    two_gpus: list[object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kwargs, _ = _search(tmp_path, monkeypatch, gpus="1,0")
    assert kwargs["device"] == "cuda:1"
    assert list(kwargs["pool"].gpus) == ["1", "0"]
    with pytest.raises(ConfigError, match="--gpus and --device exclude each other"):
        _search(tmp_path, monkeypatch, gpus="0", device="cuda:1")


def test_search_hands_an_explicit_cpu_device_to_its_workers(
    two_gpus: list[object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kwargs, seen = _search(tmp_path, monkeypatch, workers=2, device="cpu")
    assert kwargs["device"] == "cpu"
    assert kwargs["pool"].workers == 2 and not kwargs["pool"].gpus
    assert kwargs["pool"].device == "cpu"  # each worker is started with --device cpu
    assert seen["AUTOTASK_DEVICE"] is None  # nothing passed through the environment


def test_workers_without_gpus_get_the_pools_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _Recorded.started = []
    monkeypatch.setattr("autotask.search.backend.launcher.subprocess.Popen", _Recorded)
    pool = WorkerPool(tmp_path / "s.yaml", URL, "s", trials=4, workers=2, device="cpu")
    pool.start()
    pool.close()
    assert len(_Recorded.started) == 2
    assert all(cmd[cmd.index("--device") + 1] == "cpu" for cmd, _ in _Recorded.started)


class _Exited:
    """A ``subprocess.Popen`` of a worker that has already exited with ``code``."""

    codes: ClassVar[list[int]] = []
    started: ClassVar[list[list[str]]] = []

    def __init__(self, cmd: list[str], **_: Any) -> None:
        self.started.append(cmd)
        self.returncode = self.codes.pop(0)

    def poll(self) -> int:
        return self.returncode


def test_a_worker_whose_device_failed_is_started_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit code 3 (a sticky CUDA error: trial recorded FAIL) restarts that worker with
    the same command and GPU, a bounded number of times; other exits are final."""
    # worker 0: device fails, restarted, then finishes; worker 1: an ordinary error
    _Exited.codes, _Exited.started = [3, 1, 0], []
    monkeypatch.setattr("autotask.search.backend.launcher.subprocess.Popen", _Exited)
    monkeypatch.setattr(launcher.time, "sleep", lambda _s: None)
    pool = WorkerPool(tmp_path / "s.yaml", URL, "s", trials=4, workers=1, gpus=["0", "1"])
    pool.start()
    assert pool.wait(lambda: None) == [0, 1]
    pool.close()
    assert pool.restarts == [1, 0]
    assert _Exited.started[2] == _Exited.started[0]
    # a device that keeps failing is given up after DEVICE_RESTARTS restarts
    _Exited.codes = [3] * (launcher.DEVICE_RESTARTS + 1)
    again = WorkerPool(tmp_path / "s.yaml", URL, "s", trials=4, workers=1, gpus=["0"])
    again.start()
    assert again.wait(lambda: None) == [3]
    again.close()
    assert again.restarts == [launcher.DEVICE_RESTARTS]


def test_the_search_process_drops_its_device_splits_while_workers_run() -> None:
    """While a pool runs, the process that started it holds its splits on the host only
    (its device copies freed), and places them again afterwards. The 'meta' device stands
    in for a GPU."""
    suite = make_tiny_suite()
    runner = Runner.place(suite, MemoryCache(), device=torch.device("meta"))
    assert all(split.x.device.type == "meta" for split in runner.data.values())
    with runner.device_data_released():
        assert all(split.x.device.type == "cpu" for split in runner.data.values())
    assert all(split.x.device.type == "meta" for split in runner.data.values())
    cpu = Runner.place(suite, MemoryCache(), device=torch.device("cpu"))
    before = dict(cpu.data)
    with cpu.device_data_released():  # nothing to release on the host
        assert cpu.data == before
