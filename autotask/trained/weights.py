"""A trained network's weights as safetensors bytes, checked by their SHA-256.

No pickle anywhere: a state dict is written with :func:`safetensors.torch.save` (tensors
and a flat string header, nothing executable) and read back only after its hash matched
the one recorded when it was written. :class:`WeightStore` keeps the files in an Optuna
artifact store (by default the study's artifact folder), one per trained network, under
an id derived from the network's cache key.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from optuna.artifacts.exceptions import ArtifactNotFound
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from autotask.errors import DataError
from autotask.store.artifacts import ArtifactStore

__all__ = [
    "WeightStore",
    "WeightsRef",
    "check_state",
    "network_bytes",
    "read_weights",
    "sha256_of",
]

#: What every weights file's header says it is.
FORMAT = "autotask-network/1"
#: The one header metadata key autotask writes: a JSON object with ``format`` and the
#: network's metadata (one key, so that equal weights give equal bytes: safetensors
#: writes several metadata keys in no fixed order).
HEADER_KEY = "autotask"


@dataclass(frozen=True)
class WeightsRef:
    """Where one network's weights are and what they hash to."""

    artifact_id: str
    sha256: str
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WeightsRef:
        try:
            return cls(str(data["artifact_id"]), str(data["sha256"]), int(data["bytes"]))
        except (KeyError, TypeError, ValueError):
            raise DataError(f"malformed weights reference: {dict(data)!r}") from None


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def network_bytes(network: nn.Module, metadata: Mapping[str, Any]) -> bytes:
    """The network's state dict as safetensors bytes (on the CPU, contiguous), with
    ``metadata`` and :data:`FORMAT` in the header (JSON under :data:`HEADER_KEY`); equal
    weights and metadata give equal bytes."""
    state = {
        name: tensor.detach().to("cpu").contiguous().clone()
        for name, tensor in network.state_dict().items()
    }
    header = json.dumps({**metadata, "format": FORMAT}, sort_keys=True)
    return save_safetensors(state, metadata={HEADER_KEY: header})


def read_weights(
    data: bytes, *, sha256: str | None, what: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict and header metadata of weights bytes, after checking their hash
    (``sha256`` None: not checked). Every failure is one :class:`DataError` line naming
    ``what``."""
    if sha256 is not None and sha256_of(data) != sha256:
        raise DataError(f"{what}: SHA-256 does not match the recorded one (changed or damaged)")
    try:
        state = load_safetensors(data)
        header = _header(data)
    except (SafetensorError, ValueError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{what}: not a readable safetensors file ({first})") from None
    try:
        metadata = json.loads(header.get(HEADER_KEY, "{}"))
    except json.JSONDecodeError:
        raise DataError(f"{what}: malformed header metadata") from None
    if not isinstance(metadata, dict) or metadata.pop("format", None) != FORMAT:
        raise DataError(f"{what}: not an autotask network weights file")
    return state, metadata


def _header(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of safetensors bytes (a JSON header after an 8-byte length)."""
    if len(data) < 8:
        raise ValueError("file too short")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise ValueError("header longer than the file")
    header = json.loads(data[8 : 8 + size])
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise ValueError("malformed metadata")
    return {str(k): str(v) for k, v in metadata.items()}


def check_state(network: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into ``network`` strictly: missing, extra or wrongly shaped tensors
    are one :class:`DataError` line."""
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''}")
        if extra:
            parts.append(f"unexpected {extra[:3]}{' ...' if len(extra) > 3 else ''}")
        raise DataError(f"{what}: does not fit this network ({'; '.join(parts)})")
    for name, tensor in expected.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise DataError(
                f"{what}: tensor {name!r} has shape {tuple(state[name].shape)}, "
                f"this network needs {tuple(tensor.shape)}"
            )
    network.load_state_dict(dict(state), strict=True)


class WeightStore:
    """Network weights in an artifact store, one safetensors file per cache key."""

    def __init__(self, artifacts: ArtifactStore) -> None:
        self.artifacts = artifacts

    @staticmethod
    def artifact_id(key: str) -> str:
        return f"weights-{key}.safetensors"

    def save(self, key: str, data: bytes) -> WeightsRef:
        """Write ``data`` (from :func:`network_bytes`) as the weights of cache key ``key``."""
        artifact_id = self.artifact_id(key)
        self.artifacts.write(artifact_id, io.BytesIO(data))
        return WeightsRef(artifact_id, sha256_of(data), len(data))

    def load(self, ref: WeightsRef) -> bytes:
        """The bytes ``ref`` points to, checked against its hash."""
        try:
            with self.artifacts.open_reader(ref.artifact_id) as reader:
                data = reader.read()
        except ArtifactNotFound:
            raise DataError(
                f"weights {ref.artifact_id} are missing from the artifact store"
            ) from None
        if sha256_of(data) != ref.sha256:
            raise DataError(
                f"weights {ref.artifact_id}: SHA-256 does not match the recorded one "
                "(changed or damaged)"
            )
        return data

    def remove(self, ref: WeightsRef) -> None:
        with contextlib.suppress(ArtifactNotFound):
            self.artifacts.remove(ref.artifact_id)
