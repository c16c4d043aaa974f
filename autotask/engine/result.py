"""What training one network produces: :class:`NetworkResult`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["NetworkResult", "Status"]

Status = Literal["ok", "diverged"]


@dataclass
class NetworkResult:
    """Per-task metrics of one trained network at its best validation epoch.

    ``status`` is ``"diverged"`` when a loss became NaN/Inf; metrics are then empty and
    ``reason`` says where it happened. ``val_metrics``/``test_metrics`` hold each task's
    primary metric (the one Δm uses); ``val_secondary``/``test_secondary`` the other
    metrics of tasks that report more (e.g. pixel accuracy beside mIoU), empty in results
    stored before they existed.
    """

    tasks: list[str]
    status: Status
    val_metrics: dict[str, float] = field(default_factory=dict)
    test_metrics: dict[str, float] = field(default_factory=dict)
    val_loss: float | None = None
    best_epoch: int = 0
    epochs_run: int = 0
    train_seconds: float = 0.0
    params: int = 0
    macs: int = 0
    reason: str | None = None
    history: list[float] = field(default_factory=list)
    val_secondary: dict[str, dict[str, float]] = field(default_factory=dict)
    test_secondary: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkResult:
        return cls(**data)
