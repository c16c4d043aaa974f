"""A tiny NYUv2 in the on-disk format of MTAN / LibMTL, generated into a folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["write_nyuv2"]


def write_nyuv2(
    root: Path, n_train: int = 6, n_val: int = 4, hw: tuple[int, int] = (16, 24), seed: int = 0
) -> Path:
    """``root/{train,val}/{image,label,depth,normal}/<i>.npy`` with learnable structure.

    Images: float32 ``H x W x 3`` in [0, 1]; labels: float ``H x W`` in -1..12 (class
    from the image's red channel, a band of ignored pixels); depth: ``H x W x 1`` from
    the green channel, 0 in a corner (missing); normals: ``H x W x 3`` unit vectors
    from the blue channel, zero vectors where depth is missing.
    """
    rng = np.random.default_rng(seed)
    h, w = hw
    for split, n in (("train", n_train), ("val", n_val)):
        for modality in ("image", "label", "depth", "normal"):
            (root / split / modality).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image = rng.random((h, w, 3)).astype(np.float32)
            label = np.minimum((image[:, :, 0] * 13).astype(np.int64), 12).astype(np.float64)
            label[: h // 4, :] = -1.0
            depth = (0.5 + 3.0 * image[:, :, 1:2]).astype(np.float32)
            depth[-2:, -3:, 0] = 0.0
            angle = image[:, :, 2] * np.pi / 2
            normal = np.stack([np.sin(angle), np.zeros_like(angle), np.cos(angle)], axis=-1)
            normal = normal.astype(np.float32)
            normal[depth[:, :, 0] == 0] = 0.0
            for modality, array in (
                ("image", image),
                ("label", label),
                ("depth", depth),
                ("normal", normal),
            ):
                np.save(root / split / modality / f"{i}.npy", array)
    return root
