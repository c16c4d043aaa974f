"""``celeba``: CelebA face attributes from the user's local copy, one binary task per attribute.

Reads the original files: the aligned JPEGs ``img_align_celeba/000001.jpg ...``,
``list_attr_celeba.txt`` (line 1: image count; line 2: the 40 attribute names; then a file
name and 40 values of -1/1 per line) and ``list_eval_partition.txt`` (a file name and
0/1/2 = train/val/test per line), either all directly under the root (torchvision's
layout) or as ``Img/img_align_celeba/``, ``Anno/list_attr_celeba.txt`` and
``Eval/list_eval_partition.txt`` (the official download). The official partition gives
the splits. Nothing is downloaded.

Images are decoded once into a ``uint8`` cache ``[N, 3, S, S]`` (``.npy``, memory-mapped
when loaded) keyed by the image size and the list of files; a cache that does not match
its checksum is rebuilt. ``Split.x`` stays ``uint8``: the ``resnet`` backbone scales it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import uuid
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from autotask.errors import ConfigError, DataError, UnknownNameError
from autotask.suites import register_suite
from autotask.suites.base import SPLITS, Split, Task, TaskSuite

__all__ = ["ATTRIBUTES", "TAG_TASKS", "celeba", "decode_image"]

logger = logging.getLogger("autotask")

#: The 40 attributes, in the order of ``list_attr_celeba.txt``.
ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip

#: The nine attributes of TAG's CelebA experiments (Fifty et al. 2021).
TAG_TASKS: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Black_Hair", "Blond_Hair", "Brown_Hair", "Goatee", "Mustache",
    "No_Beard", "Rosy_Cheeks", "Wearing_Hat",
)  # fmt: skip

ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IMAGE_DIR = "img_align_celeba"
#: Where each file is looked for, relative to the root: torchvision's layout, then the
#: official one.
_CANDIDATES: dict[str, tuple[str, str]] = {
    ATTR_FILE: (ATTR_FILE, f"Anno/{ATTR_FILE}"),
    PARTITION_FILE: (PARTITION_FILE, f"Eval/{PARTITION_FILE}"),
    IMAGE_DIR: (IMAGE_DIR, f"Img/{IMAGE_DIR}"),
}
#: Bumped whenever the decoding or the cache format changes.
CACHE_VERSION = 1
_PARTITION_IDS = {"0": "train", "1": "val", "2": "test"}
_VALUES = frozenset({"-1", "1"})

UInt8Array = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class _Files:
    root: Path
    attributes: Path
    partition: Path
    images: Path


@dataclass(frozen=True)
class _Annotations:
    names: list[str]  # attribute names in file order
    files: list[str]  # image file names in file order
    values: npt.NDArray[np.bool_]  # [N, 40], True where the attribute is present
    split: npt.NDArray[np.int8]  # [N], 0/1/2 = train/val/test


def _locate(root: Path) -> _Files:
    if not root.is_dir():
        raise DataError(f"celeba: data root not found: {root}")

    def find(item: str) -> Path:
        candidates = [root / c for c in _CANDIDATES[item]]
        for path in candidates:
            if path.exists():
                return path
        looked = " or ".join(str(p) for p in candidates)
        raise DataError(f"celeba: {item} not found: looked for {looked}")

    return _Files(root, find(ATTR_FILE), find(PARTITION_FILE), find(IMAGE_DIR))


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"celeba: cannot read {path}: {exc}") from None


def _read_attributes(path: Path) -> tuple[list[str], list[str], npt.NDArray[np.bool_]]:
    """Attribute names, image file names and the ``[N, 40]`` presence matrix."""
    lines = _read_lines(path)
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) < 2:
        raise DataError(f"celeba: {path}: expected an image count and a header line")
    count_text = lines[0].strip()
    if not count_text.isdigit():
        raise DataError(f"celeba: {path}: line 1: expected the image count, got {count_text!r}")
    names = lines[1].split()
    if sorted(names) != sorted(ATTRIBUTES):
        unknown = sorted(set(names) - set(ATTRIBUTES))
        missing = sorted(set(ATTRIBUTES) - set(names))
        detail = "; ".join(
            part
            for part in (
                f"unknown: {', '.join(unknown)}" if unknown else "",
                f"missing: {', '.join(missing)}" if missing else "",
                "names listed twice" if len(set(names)) != len(names) else "",
            )
            if part
        )
        raise DataError(
            f"celeba: {path}: line 2: expected the 40 CelebA attribute names, "
            f"got {len(names)} ({detail})"
        )
    width = len(names) + 1
    files: list[str] = []
    rows: list[str] = []  # per image, 40 characters of "1" (present) or "0"
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if len(fields) != width:
            raise DataError(
                f"celeba: {path}: line {number}: expected {width} fields "
                f"(a file name and {len(names)} values), got {len(fields)}"
            )
        values = fields[1:]
        if not _VALUES.issuperset(values):
            column, value = next((i, v) for i, v in enumerate(values) if v not in _VALUES)
            raise DataError(
                f"celeba: {path}: line {number}: {names[column]} is {value!r}, expected -1 or 1"
            )
        files.append(fields[0])
        # "1,-1,1" -> "1,0,1" -> "101": one character per value
        rows.append(",".join(values).replace("-1", "0")[::2])
    if len(files) != int(count_text):
        raise DataError(
            f"celeba: {path}: line 1 says {int(count_text)} images but the file lists {len(files)}"
        )
    flat = np.frombuffer("".join(rows).encode("ascii"), dtype=np.uint8)
    present = (flat == ord("1")).reshape(len(files), len(names))
    _check_unique(path, files)
    return names, files, present


def _check_unique(path: Path, files: Sequence[str]) -> None:
    if len(set(files)) != len(files):
        seen: set[str] = set()
        for i, name in enumerate(files):
            if name in seen:
                raise DataError(f"celeba: {path}: {name} is listed twice (again on line {i + 3})")
            seen.add(name)


def _read_partition(path: Path, files: Sequence[str], attr_path: Path) -> npt.NDArray[np.int8]:
    """The split id (0/1/2) of every image of ``files``."""
    lines = [line for line in _read_lines(path) if line.strip()]
    split_of: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if len(fields) != 2 or fields[1] not in _PARTITION_IDS:
            raise DataError(
                f"celeba: {path}: line {number}: expected a file name and 0, 1 or 2, "
                f"got {line.strip()!r}"
            )
        if fields[0] in split_of:
            raise DataError(f"celeba: {path}: line {number}: {fields[0]} is listed twice")
        split_of[fields[0]] = int(fields[1])
    missing = [f for f in files if f not in split_of]
    if missing:
        raise DataError(
            f"celeba: {path} does not match {attr_path}: no partition for {len(missing)} "
            f"of {len(files)} images, e.g. {missing[0]}"
        )
    if len(split_of) != len(files):
        known = set(files)
        extra = [f for f in split_of if f not in known]
        raise DataError(
            f"celeba: {path} does not match {attr_path}: {len(extra)} partitioned images "
            f"have no attributes, e.g. {extra[0]}"
        )
    return np.array([split_of[f] for f in files], dtype=np.int8)


def _fingerprint(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _annotations(files: _Files) -> _Annotations:
    names, image_files, values = _read_attributes(files.attributes)
    split = _read_partition(files.partition, image_files, files.attributes)
    return _Annotations(names, image_files, values, split)


def _choose_rows(
    split: npt.NDArray[np.int8], max_images: int | None, seed: int
) -> dict[str, npt.NDArray[np.int64]]:
    """Rows of each split in file order; at most ``max_images`` each, a seeded choice."""
    rng = np.random.default_rng(seed)
    rows: dict[str, npt.NDArray[np.int64]] = {}
    for i, name in enumerate(SPLITS):
        idx = np.flatnonzero(split == i).astype(np.int64)
        if len(idx) == 0:
            raise DataError(f"celeba: the partition file has no {name!r} images")
        if max_images is not None and len(idx) > max_images:
            idx = np.sort(rng.choice(idx, size=max_images, replace=False))
        rows[name] = idx
    return rows


def decode_image(path: Path, size: int) -> UInt8Array:
    """One image as ``uint8 [3, size, size]``.

    Follows TAG's CelebA pipeline (google-research ``tag/celeba/CelebA.ipynb``): the whole
    aligned 178x218 image, no crop, resized to ``size x size`` with
    ``tf.image.resize(convert_image_dtype(image, float32), [64, 64])``, i.e. bilinear with
    half-pixel centres and no antialiasing, which ``F.interpolate(mode="bilinear",
    align_corners=False)`` computes. The result is rounded to uint8 (TAG kept floats in
    [0, 1]; the difference is at most 0.5/255).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise DataError(f"celeba: image listed but missing: {path}") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise DataError(f"celeba: cannot decode image {path}: {exc}") from None
    pixels = torch.from_numpy(rgb.copy()).permute(2, 0, 1).unsqueeze(0).to(torch.float32)
    resized = F.interpolate(
        pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=False
    )
    return resized[0].round().clamp(0, 255).to(torch.uint8).numpy()


def _crc32(array: UInt8Array, rows_per_chunk: int = 4096) -> int:
    crc = 0
    for start in range(0, array.shape[0], rows_per_chunk):
        chunk = np.ascontiguousarray(array[start : start + rows_per_chunk]).reshape(-1)
        crc = zlib.crc32(chunk.data, crc)
    return crc


class _Cache:
    """``<dir>/celeba-<S>px-<N>-<digest>.npy`` and its ``.json`` description."""

    def __init__(self, directory: Path, size: int, files: Sequence[str]) -> None:
        blob = json.dumps(
            {"version": CACHE_VERSION, "size": size, "files": list(files)}, separators=(",", ":")
        )
        self.digest = hashlib.sha256(blob.encode()).hexdigest()
        self.size, self.count = size, len(files)
        stem = f"celeba-{size}px-{len(files)}-{self.digest[:16]}"
        self.directory = directory
        self.array_path = directory / f"{stem}.npy"
        self.meta_path = directory / f"{stem}.json"
        self.lock_path = directory / f"{stem}.lock"

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.count, 3, self.size, self.size)

    def load(self) -> UInt8Array | None:
        """The cached images, or None (with the reason logged) when absent or invalid."""
        if not self.array_path.exists():
            return None
        try:
            meta = json.loads(self.meta_path.read_text())
            expected = {"version": CACHE_VERSION, "files_sha256": self.digest}
            if {k: meta.get(k) for k in expected} != expected:
                raise ValueError("it describes other images")
            array = np.load(self.array_path, mmap_mode="c", allow_pickle=False)
            if array.dtype != np.uint8 or tuple(array.shape) != self.shape:
                raise ValueError(f"it holds {array.dtype} {tuple(array.shape)}")
            if _crc32(array) != meta.get("crc32"):
                raise ValueError("its checksum does not match")
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            logger.warning("celeba: rebuilding the image cache %s: %s", self.array_path, exc)
            return None
        return array  # type: ignore[no-any-return]

    def build(self, paths: Sequence[Path], workers: int, show_progress: bool) -> UInt8Array:
        """Decode ``paths`` into a temporary file, then rename it into place."""
        tag = f"tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp_array = self.array_path.with_name(f"{self.array_path.name}.{tag}")
        tmp_meta = self.meta_path.with_name(f"{self.meta_path.name}.{tag}")
        self.meta_path.unlink(missing_ok=True)
        try:
            out = np.lib.format.open_memmap(tmp_array, mode="w+", dtype=np.uint8, shape=self.shape)
            _decode_all(paths, self.size, out, workers, show_progress)
            out.flush()
            crc = _crc32(out)
            del out
            meta = {
                "version": CACHE_VERSION,
                "files_sha256": self.digest,
                "shape": list(self.shape),
                "crc32": crc,
            }
            tmp_meta.write_text(json.dumps(meta, indent=2) + "\n")
            os.replace(tmp_array, self.array_path)
            os.replace(tmp_meta, self.meta_path)
        finally:
            tmp_array.unlink(missing_ok=True)
            tmp_meta.unlink(missing_ok=True)
        loaded = self.load()
        if loaded is None:
            raise DataError(f"celeba: the image cache {self.array_path} could not be read back")
        return loaded


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (processes building one cache wait for each other)."""
    try:
        import fcntl
    except ImportError:  # no flock: concurrent builders each write their own temporary file
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _decode_all(
    paths: Sequence[Path], size: int, out: UInt8Array, workers: int, show_progress: bool
) -> None:
    progress = Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True, highlight=False),
        disable=not show_progress,
        transient=False,
    )
    with progress, ThreadPoolExecutor(max_workers=workers) as pool:
        bar = progress.add_task(f"celeba: decoding images to {size}x{size}", total=len(paths))
        try:
            for i, image in enumerate(pool.map(lambda p: decode_image(p, size), paths)):
                out[i] = image
                if i % 256 == 255 or i == len(paths) - 1:
                    progress.update(bar, completed=i + 1)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _image_paths(files: _Files, names: Sequence[str]) -> list[Path]:
    paths = [files.images / name for name in names]
    for path in paths:
        if not path.is_file():
            raise DataError(f"celeba: image listed in {files.attributes.name} but missing: {path}")
    return paths


def _images(
    files: _Files, names: Sequence[str], size: int, cache_dir: Path, workers: int, progress: bool
) -> tuple[UInt8Array, Path]:
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"celeba: cannot create the image cache folder {cache_dir}: {exc}; set 'cache_dir'"
        ) from None
    cache = _Cache(cache_dir, size, names)
    try:
        with _exclusive(cache.lock_path):
            array = cache.load()
            if array is None:
                array = cache.build(_image_paths(files, names), workers, progress)
    except OSError as exc:
        raise DataError(
            f"celeba: cannot write the image cache in {cache_dir}: {exc}; set 'cache_dir'"
        ) from None
    return array, cache.array_path


def _task_names(tasks: Sequence[str] | None) -> list[str]:
    if tasks is None:
        return list(TAG_TASKS)
    if isinstance(tasks, str) or not isinstance(tasks, Sequence) or not tasks:
        raise ConfigError("celeba: 'tasks' must be a non-empty list of attribute names")
    names = [str(t) for t in tasks]
    for name in names:
        if name not in ATTRIBUTES:
            raise UnknownNameError("CelebA attribute", name, ATTRIBUTES)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"celeba: task listed twice: {', '.join(twice)}")
    return names


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"celeba: '{name}' must be an integer >= 1, got {value!r}")
    return value


@register_suite("celeba")
def celeba(
    *,
    path: str | os.PathLike[str] | None = None,
    tasks: Sequence[str] | None = None,
    image_size: int = 64,
    max_images: int | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> TaskSuite:
    """CelebA from a local copy, official partition, one ``binary`` task per attribute.

    ``path``: the CelebA root (either layout, see the module docstring). ``tasks``:
    attribute names (default: TAG's nine, :data:`TAG_TASKS`). ``image_size``: side of the
    square ``uint8`` images. ``max_images``: keep at most this many images per split
    (a choice seeded by ``seed``), for quick runs. ``cache_dir``: where decoded images are
    cached (default ``<path>/.autotask-cache``). ``workers``: decoding threads (default:
    up to 8). ``progress``: show a progress bar while decoding.
    """
    if path is None:
        raise ConfigError("celeba: 'path' is required: the folder holding your CelebA copy")
    names = _task_names(tasks)
    size = _positive_int("image_size", image_size)
    cap = None if max_images is None else _positive_int("max_images", max_images)
    threads = _positive_int("workers", min(8, os.cpu_count() or 1) if workers is None else workers)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"celeba: 'seed' must be an integer, got {seed!r}")
    root = Path(path).expanduser().resolve()
    files = _locate(root)
    notes = _annotations(files)
    rows = _choose_rows(notes.split, cap, seed)
    order = np.concatenate([rows[s] for s in SPLITS])
    cache_root = root / ".autotask-cache" if cache_dir is None else Path(cache_dir).expanduser()
    images, cache_path = _images(
        files, [notes.files[i] for i in order], size, cache_root, threads, progress
    )
    x = torch.from_numpy(images)
    columns = [notes.names.index(n) for n in names]
    splits: dict[str, Split] = {}
    start = 0
    for split in SPLITS:
        idx = rows[split]
        values = notes.values[idx][:, columns].astype(np.float32)
        splits[split] = Split(
            x=x[start : start + len(idx)],
            targets={n: torch.from_numpy(values[:, j].copy()) for j, n in enumerate(names)},
            masks={n: torch.ones(len(idx), dtype=torch.bool) for n in names},
        )
        start += len(idx)
    train_rates = notes.values[rows["train"]][:, columns].mean(axis=0)
    return TaskSuite(
        name="celeba",
        tasks=[Task(n, "binary", 1) for n in names],
        splits=splits,
        input_shape=(3, size, size),
        default_backbone={"name": "resnet", "params": {"width": 64, "blocks": 2}},
        params={
            "path": str(root),
            "fingerprint": _fingerprint(files.attributes, files.partition),
            "tasks": names,
            "image_size": size,
            "max_images": cap,
            "seed": seed,
        },
        metadata={
            "root": str(root),
            "attributes": list(notes.names),
            "images": {s: len(rows[s]) for s in SPLITS},
            "images_available": {s: int((notes.split == i).sum()) for i, s in enumerate(SPLITS)},
            "positive_rate_train": {n: float(r) for n, r in zip(names, train_rates, strict=True)},
            "cache": str(cache_path),
        },
    )
