"""A tiny CelebA in the original on-disk format, generated for tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from autotask.suites.celeba import ATTRIBUTES

#: Where each file goes, relative to the root, per layout.
LAYOUTS: dict[str, dict[str, str]] = {
    "torchvision": {
        "attr": "list_attr_celeba.txt",
        "partition": "list_eval_partition.txt",
        "images": "img_align_celeba",
    },
    "official": {
        "attr": "Anno/list_attr_celeba.txt",
        "partition": "Eval/list_eval_partition.txt",
        "images": "Img/img_align_celeba",
    },
}


@dataclass
class TinyCeleba:
    root: Path
    layout: str
    files: list[str]
    values: npt.NDArray[np.int64]  # [N, 40] of -1/1, in file order
    split: npt.NDArray[np.int64]  # [N] of 0/1/2

    def path(self, item: str) -> Path:
        return self.root / LAYOUTS[self.layout][item]


def make_celeba(
    root: Path,
    *,
    layout: str = "torchvision",
    splits: tuple[int, int, int] = (8, 2, 2),
    seed: int = 0,
    width: int = 178,
    height: int = 218,
) -> TinyCeleba:
    """Random 178x218 JPEGs with random -1/1 attributes; images in partition order.

    Images are random noise whose red channel's mean is raised where ``Black_Hair`` is 1,
    so a network can learn something from them.
    """
    rng = np.random.default_rng(seed)
    n = sum(splits)
    files = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    values = rng.choice(np.array([-1, 1]), size=(n, len(ATTRIBUTES)))
    split = np.repeat(np.arange(3), splits)
    spec = LAYOUTS[layout]
    images = root / spec["images"]
    images.mkdir(parents=True)
    black = ATTRIBUTES.index("Black_Hair")
    for i, name in enumerate(files):
        pixels = rng.integers(0, 160, size=(height, width, 3), dtype=np.uint8)
        if values[i, black] == 1:
            pixels[..., 0] += 90
        Image.fromarray(pixels, "RGB").save(images / name, quality=90)
    attr = root / spec["attr"]
    attr.parent.mkdir(parents=True, exist_ok=True)
    lines = [str(n), " ".join(ATTRIBUTES) + " "]
    # Like the original: values padded to two characters ("-1" / " 1").
    lines += [
        name + " " + " ".join(f"{v:2d}" for v in row)
        for name, row in zip(files, values, strict=True)
    ]
    attr.write_text("\n".join(lines) + "\n")
    partition = root / spec["partition"]
    partition.parent.mkdir(parents=True, exist_ok=True)
    partition.write_text("".join(f"{f} {s}\n" for f, s in zip(files, split, strict=True)))
    return TinyCeleba(root, layout, files, values, split)
