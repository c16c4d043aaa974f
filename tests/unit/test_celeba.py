"""The ``celeba`` suite on a tiny CelebA generated in the original on-disk format."""

from __future__ import annotations

import math
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import autotask.suites.celeba as celeba_module
from autotask.affinity.estimators import build_estimator
from autotask.engine.cache import MemoryCache
from autotask.engine.job import NetworkJob
from autotask.engine.loop import train_network
from autotask.errors import ConfigError, DataError, UnknownNameError
from autotask.models import build_model, count_macs, interface_for
from autotask.search.scoring import TrainingContext
from autotask.search.study import build_suite, validate_space
from autotask.search.study_config import load_study_config
from autotask.spec import ArchitectureSpec, BackboneSpec, BalancerSpec, OptimizerSpec, TaskTree
from autotask.suites import get_suite
from autotask.suites.base import SPLITS, TaskSuite
from autotask.suites.celeba import ATTRIBUTES, TAG_TASKS, decode_image
from tests.celeba_data import TinyCeleba, make_celeba
from tests.conftest import REPO

TINY_RESNET = {"name": "resnet", "params": {"width": 4, "blocks": 1}}


def load(data: TinyCeleba, **params: Any) -> TaskSuite:
    params.setdefault("image_size", 16)
    return get_suite("celeba", path=str(data.root), workers=2, progress=False, **params)


@pytest.fixture
def tiny(tmp_path: Path) -> TinyCeleba:
    return make_celeba(tmp_path / "celeba")


def _rows(data: TinyCeleba, split: str) -> np.ndarray:
    return np.flatnonzero(data.split == SPLITS.index(split))


# --- reading the original files ---------------------------------------------------------


@pytest.mark.parametrize("layout", ["torchvision", "official"])
def test_both_layouts_give_the_official_splits_and_targets(tmp_path: Path, layout: str) -> None:
    data = make_celeba(tmp_path / "celeba", layout=layout)
    suite = load(data)
    assert suite.task_names == list(TAG_TASKS)
    assert all(t.kind == "binary" and t.out_features == 1 for t in suite.tasks)
    assert {s: len(suite.splits[s]) for s in SPLITS} == {"train": 8, "val": 2, "test": 2}
    assert suite.input_shape == (3, 16, 16)
    for split in SPLITS:
        rows = _rows(data, split)
        part = suite.splits[split]
        assert part.x.dtype == torch.uint8 and tuple(part.x.shape) == (len(rows), 3, 16, 16)
        for task in TAG_TASKS:
            expected = (data.values[rows, ATTRIBUTES.index(task)] == 1).astype(np.float32)
            assert part.targets[task].dtype == torch.float32
            np.testing.assert_array_equal(part.targets[task].numpy(), expected)
            assert bool(part.masks[task].all())
    assert suite.metadata["attributes"] == list(ATTRIBUTES)
    assert suite.metadata["images"] == {"train": 8, "val": 2, "test": 2}
    assert suite.metadata["root"] == str(data.root.resolve())
    assert suite.default_backbone["name"] == "resnet"


def test_images_are_the_decoded_files_in_split_order(tiny: TinyCeleba) -> None:
    suite = load(tiny)
    for split in SPLITS:
        for j, row in enumerate(_rows(tiny, split)):
            expected = decode_image(tiny.path("images") / tiny.files[row], 16)
            np.testing.assert_array_equal(suite.splits[split].x[j].numpy(), expected)


def test_any_attributes_can_be_chosen_by_name(tiny: TinyCeleba) -> None:
    suite = load(tiny, tasks=["Smiling", "Young", "Male"])
    assert suite.task_names == ["Smiling", "Young", "Male"]
    rows = _rows(tiny, "train")
    for task in suite.task_names:
        expected = tiny.values[rows, ATTRIBUTES.index(task)] == 1
        np.testing.assert_array_equal(suite.splits["train"].targets[task].numpy(), expected)


def test_study_task_names_reach_the_factory(tiny: TinyCeleba) -> None:
    """``suite: {name: celeba, tasks: [...]}`` builds those attributes, not a TAG subset."""
    config = load_study_config_text(
        f"name: t\nsuite: {{name: celeba, path: {tiny.root}, image_size: 8, progress: false,"
        " tasks: [Smiling, Black_Hair]}\n",
        tiny.root.parent,
    )
    suite = build_suite(config.suite)
    assert suite.task_names == ["Smiling", "Black_Hair"]


def test_build_model_rebuilds_the_named_attributes_from_the_suite_reference(
    tiny: TinyCeleba,
) -> None:
    spec = ArchitectureSpec.from_dict(
        {
            "suite": {"name": "celeba", "path": str(tiny.root), "image_size": 8,
                      "progress": False, "tasks": ["Smiling", "Male"]},
            "networks": [{"tasks": ["Male", "Smiling"]}],
            "backbone": TINY_RESNET,
        }
    )  # fmt: skip
    model = build_model(spec).eval()
    out = model(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    assert set(out) == {"Smiling", "Male"}


def test_unknown_attribute_lists_the_forty(tiny: TinyCeleba) -> None:
    with pytest.raises(UnknownNameError) as info:
        load(tiny, tasks=["Smilling"])
    assert info.value.known == sorted(ATTRIBUTES)
    assert "Did you mean 'Smiling'?" in str(info.value) and "Young" in str(info.value)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"path": None}, "'path' is required"),
        ({"tasks": []}, "non-empty list"),
        ({"tasks": "Smiling"}, "non-empty list"),
        ({"tasks": ["Male", "Male"]}, "listed twice: Male"),
        ({"image_size": 0}, "'image_size' must be an integer >= 1"),
        ({"image_size": 16.5}, "'image_size'"),
        ({"max_images": 0}, "'max_images'"),
        ({"workers": 0}, "'workers'"),
        ({"seed": "x"}, "'seed'"),
        ({"colour": "red"}, "bad parameters"),
    ],
)
def test_bad_parameters(tiny: TinyCeleba, params: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"path": str(tiny.root), "progress": False, **params}
    with pytest.raises(ConfigError, match=message):
        get_suite("celeba", **args)


def test_max_images_is_a_seeded_choice_per_split(tiny: TinyCeleba) -> None:
    first = load(tiny, max_images=3, seed=0)
    assert first.metadata["images"] == {"train": 3, "val": 2, "test": 2}
    assert first.metadata["images_available"] == {"train": 8, "val": 2, "test": 2}
    again = load(tiny, max_images=3, seed=0)
    assert torch.equal(first.splits["train"].x, again.splits["train"].x)
    full = load(tiny).splits["train"].x
    chosen = []
    for seed in range(4):
        x = load(tiny, max_images=3, seed=seed).splits["train"].x
        # each chosen image is one of the split's images, in file order
        rows = [next(i for i in range(len(full)) if torch.equal(full[i], img)) for img in x]
        assert rows == sorted(rows)
        chosen.append(tuple(rows))
    assert len(set(chosen)) > 1


def test_key_identifies_the_data(tiny: TinyCeleba, tmp_path: Path) -> None:
    base = load(tiny)
    assert load(tiny).key() == base.key()
    other_root = tmp_path / "copy"
    shutil.copytree(tiny.root, other_root)
    variants = [
        load(tiny, image_size=8),
        load(tiny, tasks=["Smiling"]),
        load(tiny, max_images=4),
        get_suite("celeba", path=str(other_root), image_size=16, progress=False),
    ]
    keys = {base.key(), *(v.key() for v in variants)}
    assert len(keys) == 5
    assert base.params["path"] == str(tiny.root.resolve())
    assert {"tasks", "image_size", "max_images", "fingerprint"} <= set(base.params)
    # a changed attribute file changes the key
    attr = tiny.path("attr")
    attr.write_text(attr.read_text().replace(" 1", "-1", 1))
    assert load(tiny).key() != base.key()


def test_resize_follows_tag_bilinear_without_antialiasing(tmp_path: Path) -> None:
    """tf.image.resize's bilinear: an 8x8 -> 2x2 reduction samples each 4x4 block's centre."""
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    Image.fromarray(np.stack([pixels] * 3, axis=-1), "RGB").save(tmp_path / "grid.png")
    out = decode_image(tmp_path / "grid.png", 2)
    centre = pixels.astype(np.float64).reshape(2, 4, 2, 4)[:, 1:3, :, 1:3].mean(axis=(1, 3))
    np.testing.assert_array_equal(out[0], np.round(centre))
    assert out.shape == (3, 2, 2) and out.dtype == np.uint8


# --- the image cache --------------------------------------------------------------------


def _count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    real = celeba_module.decode_image

    def counting(path: Path, size: int) -> np.ndarray:
        calls.append(path)
        return real(path, size)

    monkeypatch.setattr(celeba_module, "decode_image", counting)
    return calls


def test_cache_is_built_once_then_reused(tiny: TinyCeleba, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_decodes(monkeypatch)
    first = load(tiny)
    assert len(calls) == 12
    cache = Path(first.metadata["cache"])
    assert cache.parent == tiny.root / ".autotask-cache" and cache.suffix == ".npy"
    assert np.load(cache).shape == (12, 3, 16, 16)
    mtime = cache.stat().st_mtime_ns
    second = load(tiny)
    assert len(calls) == 12  # nothing decoded again
    assert cache.stat().st_mtime_ns == mtime
    for split in SPLITS:
        assert torch.equal(first.splits[split].x, second.splits[split].x)
    load(tiny, image_size=8)  # another size: another cache
    assert len(calls) == 24
    assert not list(cache.parent.glob("*.tmp-*"))


@pytest.mark.parametrize("damage", ["truncate", "flip", "header", "no-meta", "bad-meta"])
def test_a_damaged_cache_is_rebuilt(
    tiny: TinyCeleba, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    good = load(tiny)
    cache = Path(good.metadata["cache"])
    expected = {s: good.splits[s].x.clone() for s in SPLITS}  # the damage below hits its mmap
    meta = cache.with_suffix(".json")
    raw = bytearray(cache.read_bytes())
    if damage == "truncate":
        cache.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":
        raw[-5] ^= 0xFF
        cache.write_bytes(raw)
    elif damage == "header":
        cache.write_bytes(b"garbage" + raw[7:])
    elif damage == "no-meta":
        meta.unlink()
    else:
        meta.write_text("{not json")
    calls = _count_decodes(monkeypatch)
    rebuilt = load(tiny)
    assert len(calls) == 12
    for split in SPLITS:
        assert torch.equal(rebuilt.splits[split].x, expected[split])
    assert len(_count_decodes(monkeypatch)) == 0 and load(tiny) is not None


def test_concurrent_loads_decode_once(tiny: TinyCeleba, monkeypatch: pytest.MonkeyPatch) -> None:
    """Builders of one cache wait for each other (a file lock), then all read the result."""
    calls = _count_decodes(monkeypatch)
    with ThreadPoolExecutor(max_workers=3) as pool:
        suites = list(pool.map(lambda _: load(tiny), range(3)))
    assert len(calls) == 12
    for suite in suites[1:]:
        assert torch.equal(suite.splits["train"].x, suites[0].splits["train"].x)


def test_cache_dir_can_be_elsewhere(tiny: TinyCeleba, tmp_path: Path) -> None:
    suite = load(tiny, cache_dir=str(tmp_path / "elsewhere"))
    assert Path(suite.metadata["cache"]).parent == tmp_path / "elsewhere"
    assert not (tiny.root / ".autotask-cache").exists()
    assert "cache_dir" not in suite.params  # where the cache lives does not change the data


def test_unusable_cache_dir_is_an_error(tiny: TinyCeleba, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(DataError, match="cannot create the image cache folder") as info:
        load(tiny, cache_dir=str(blocker / "cache"))
    assert "set 'cache_dir'" in _one_line(info)


def test_a_valid_cache_needs_no_images(tiny: TinyCeleba) -> None:
    first = load(tiny)
    shutil.rmtree(tiny.path("images"))
    tiny.path("images").mkdir()
    assert torch.equal(load(tiny).splits["train"].x, first.splits["train"].x)


# --- malformed input --------------------------------------------------------------------


def _replace_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


def _one_line(exc: pytest.ExceptionInfo[DataError]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_missing_root_and_files_name_the_paths(tiny: TinyCeleba, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data root not found") as info:
        get_suite("celeba", path=str(tmp_path / "nowhere"), progress=False)
    assert str(tmp_path / "nowhere") in _one_line(info)
    for item, name in [
        ("attr", "list_attr_celeba.txt"),
        ("partition", "list_eval_partition.txt"),
        ("images", "img_align_celeba"),
    ]:
        target = tiny.path(item)
        moved = target.with_name(target.name + ".away")
        target.rename(moved)
        with pytest.raises(DataError) as info:
            load(tiny)
        message = _one_line(info)
        assert f"{name} not found" in message
        assert str(tiny.root / name) in message  # torchvision layout
        assert "Anno/" in message or "Eval/" in message or "Img/" in message  # official one
        moved.rename(target)


@pytest.mark.parametrize(
    ("line", "text", "message"),
    [
        (1, "many", "line 1: expected the image count, got 'many'"),
        (1, "13", "line 1 says 13 images but the file lists 12"),
        (2, " ".join(ATTRIBUTES[:-1]), "line 2: expected the 40 CelebA attribute names, got 39"),
        (2, " ".join((*ATTRIBUTES[:-1], "Old")), "unknown: Old; missing: Young"),
        (5, "000003.jpg 1 -1", "line 5: expected 41 fields"),
        (4, "000002.jpg " + " ".join(["1"] * 39 + ["0"]), "line 4: Young is '0', expected -1 or 1"),
        (6, "000001.jpg " + " ".join(["1"] * 40), "000001.jpg is listed twice"),
    ],
)
def test_malformed_attribute_file(tiny: TinyCeleba, line: int, text: str, message: str) -> None:
    _replace_line(tiny.path("attr"), line, text)
    with pytest.raises(DataError, match=r"list_attr_celeba\.txt") as info:
        load(tiny)
    assert message in _one_line(info)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("drop", "no partition for 1 of 12 images, e.g. 000012.jpg"),
        ("extra", "1 partitioned images have no attributes, e.g. 999999.jpg"),
        ("bad-id", "line 3: expected a file name and 0, 1 or 2, got '000003.jpg 7'"),
        ("twice", "line 13: 000001.jpg is listed twice"),
    ],
)
def test_partition_file_must_match_the_attribute_file(
    tiny: TinyCeleba, change: str, message: str
) -> None:
    path = tiny.path("partition")
    lines = path.read_text().splitlines()
    if change == "drop":
        lines = lines[:-1]
    elif change == "extra":
        lines.append("999999.jpg 0")
    elif change == "bad-id":
        lines[2] = "000003.jpg 7"
    else:
        lines.append("000001.jpg 0")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"list_eval_partition\.txt") as info:
        load(tiny)
    assert message in _one_line(info)


def test_a_split_without_images_is_an_error(tiny: TinyCeleba) -> None:
    path = tiny.path("partition")
    path.write_text(path.read_text().replace(" 2\n", " 1\n"))
    with pytest.raises(DataError, match="no 'test' images"):
        load(tiny)


def test_listed_image_missing(tiny: TinyCeleba) -> None:
    (tiny.path("images") / "000007.jpg").unlink()
    with pytest.raises(DataError, match="missing") as info:
        load(tiny)
    assert str(tiny.path("images") / "000007.jpg") in _one_line(info)
    assert not list((tiny.root / ".autotask-cache").glob("*.npy"))


def test_image_that_fails_to_decode(tiny: TinyCeleba) -> None:
    (tiny.path("images") / "000004.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(DataError, match="cannot decode image") as info:
        load(tiny)
    assert "000004.jpg" in _one_line(info)
    cache = tiny.root / ".autotask-cache"
    assert not list(cache.glob("*.npy")) and not list(cache.glob("*.tmp-*"))


def test_truncated_jpeg_fails_to_decode(tiny: TinyCeleba) -> None:
    image = tiny.path("images") / "000002.jpg"
    image.write_bytes(image.read_bytes()[:300])
    with pytest.raises(DataError, match=r"cannot decode image .*000002\.jpg"):
        load(tiny)


# --- training on uint8 images -----------------------------------------------------------


def _context(suite: TaskSuite, device: torch.device, epochs: int = 2) -> TrainingContext:
    return TrainingContext.create(
        suite,
        MemoryCache(),
        seed=0,
        device=device,
        baseline_optimizer=OptimizerSpec(name="adam", lr=0.01, epochs=epochs, batch_size=4),
        baseline_backbone=BackboneSpec(**TINY_RESNET),
    )


def test_tiny_resnet_trains_end_to_end(tiny: TinyCeleba, device: torch.device) -> None:
    suite = load(tiny, tasks=["Black_Hair", "Smiling"])
    context = _context(suite, device)
    spec = ArchitectureSpec.from_dict(
        {
            "networks": [{"tasks": ["Black_Hair", "Smiling"], "branch_at": 1,
                          "children": [{"tasks": ["Black_Hair"]}, {"tasks": ["Smiling"]}]}],
            "optimizer": {"name": "adam", "lr": 0.01, "epochs": 2, "batch_size": 4},
            "backbone": TINY_RESNET,
        }
    )  # fmt: skip
    score = context.score(spec)
    assert score.trained == 1
    assert {t: r.status for t, r in context.baselines().items()} == {
        "Black_Hair": "ok",
        "Smiling": "ok",
    }
    for metrics in (score.val_metrics, score.test_metrics):
        assert set(metrics) == {"Black_Hair", "Smiling"}
        assert all(0.0 <= v <= 1.0 for v in metrics.values())
    assert math.isfinite(score.delta_m_val) and score.cost > 0


@pytest.mark.parametrize(
    ("balancer", "params"),
    [
        ("mgda", {"mode": "parameters"}),
        ("mgda", {"mode": "representation"}),
        ("gradnorm", {"norm_on": "layer"}),
    ],
)
def test_gradient_balancers_train_on_uint8_images(
    tiny: TinyCeleba, device: torch.device, balancer: str, params: dict[str, Any]
) -> None:
    suite = load(tiny, tasks=["Black_Hair", "Smiling", "Male"])
    data = {name: split.to(device) for name, split in suite.splits.items()}
    tree = TaskTree.model_validate(
        {"tasks": ["Black_Hair", "Smiling", "Male"], "branch_at": 1,
         "children": [{"tasks": ["Black_Hair", "Smiling"]}, {"tasks": ["Male"]}]}
    )  # fmt: skip
    job = NetworkJob(
        suite.key(),
        tree,
        BackboneSpec(name="resnet", params={"width": 4, "blocks": 1, "stages": 2}),
        OptimizerSpec(name="sgd", lr=0.01, epochs=2, batch_size=4),
        BalancerSpec(name=balancer, params=params),
        0,
    )
    _, result = train_network(job, data, interface_for(suite))
    assert result.status == "ok", result.reason
    assert all(math.isfinite(v) for v in result.history) and len(result.history) == 2
    assert set(result.test_metrics) == {"Black_Hair", "Smiling", "Male"}


def test_model_cost_and_rebuild_accept_uint8(tiny: TinyCeleba) -> None:
    suite = load(tiny)
    interface = interface_for(suite)
    spec = ArchitectureSpec.from_dict(
        {
            "networks": [{"tasks": list(TAG_TASKS)}],
            "backbone": TINY_RESNET,
            "interface": interface.model_dump(mode="json"),
        }
    )
    model = build_model(spec).eval()
    x = suite.splits["val"].x
    out = model(x)
    assert set(out) == set(TAG_TASKS) and all(v.shape == (2,) for v in out.values())
    same = model(x.float() / 255)
    for task in TAG_TASKS:
        torch.testing.assert_close(out[task], same[task])
    assert count_macs(model, suite.input_shape) > 0


@pytest.mark.parametrize("estimator", ["lookahead", "rsa"])
def test_affinity_estimators_run_on_uint8_images(tmp_path: Path, estimator: str) -> None:
    data = make_celeba(tmp_path / "celeba", splits=(8, 4, 2))
    suite = load(data, tasks=["Black_Hair", "Smiling", "Male"])
    settings = {"every": 1} if estimator == "lookahead" else {"probe_rows": 4}
    matrix = build_estimator(estimator, **settings).estimate(_context(suite, torch.device("cpu")))
    values = np.asarray(matrix.values)
    assert values.shape == (3, 3)
    off_diagonal = values[~np.eye(3, dtype=bool)]
    assert np.isfinite(off_diagonal).all()


# --- the preset -------------------------------------------------------------------------


def load_study_config_text(text: str, folder: Path) -> Any:
    path = folder / "study.yaml"
    path.write_text(text)
    return load_study_config(path)


def test_tag_preset_validates_on_the_fixture(tiny: TinyCeleba, tmp_path: Path) -> None:
    preset = (REPO / "studies" / "celeba-tag.yaml").read_text()
    assert "path: data/celeba" in preset
    space = REPO / "search_spaces" / "celeba.yaml"
    text = preset.replace("path: data/celeba", f"path: {tiny.root}\n  progress: false")
    text = text.replace("../search_spaces/celeba.yaml", str(space))
    config = load_study_config_text(text, tmp_path)
    suite = build_suite(config.suite)
    assert suite.task_names == list(TAG_TASKS) and suite.input_shape == (3, 64, 64)
    validate_space(config.search_space, suite)
    optimizer = config.search_space.optimizer
    assert (optimizer.name, optimizer.lr, optimizer.batch_size, optimizer.epochs) == (
        "sgd",
        0.0005,
        256,
        100,
    )
    backbone = config.search_space.backbone.default(suite.default_backbone)
    assert backbone.name == "resnet"
    assert config.affinity is not None and config.affinity.estimator == "lookahead"


def test_tag_preset_loads_as_shipped() -> None:
    config = load_study_config(REPO / "studies" / "celeba-tag.yaml")
    assert config.suite.name == "celeba" and config.suite.params["path"] == "data/celeba"
    assert os.path.basename(str(config.suite.params["path"])) == "celeba"
