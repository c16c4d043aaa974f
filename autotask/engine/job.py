"""What determines how one network is trained: :class:`NetworkJob`, and its cache key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from autotask.spec import BackboneSpec, BalancerSpec, OptimizerSpec, TaskTree, stable_hash

__all__ = ["NetworkJob"]


@dataclass(frozen=True)
class NetworkJob:
    """One network to train: its task tree, backbone, optimizer, balancer and seed on a
    suite, under resolved numerics. Equal jobs train equal networks; :attr:`key` names the
    job in the result cache."""

    suite_key: str
    tree: TaskTree
    backbone: BackboneSpec
    optimizer: OptimizerSpec
    balancer: BalancerSpec
    seed: int
    #: resolved settings that change results (``Runtime.numerics()``: precision, TF32);
    #: empty for plain fp32, which keeps the keys of fp32 runs as they always were
    numerics: Mapping[str, Any] = field(default_factory=dict)
    key: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "numerics", dict(self.numerics or {}))
        object.__setattr__(self, "key", stable_hash(self.identity(), length=32))

    def identity(self) -> dict[str, Any]:
        """The fields the cache key is the hash of."""
        identity: dict[str, Any] = {
            "suite": self.suite_key,
            "tree": self.tree.model_dump(mode="json"),
            "backbone": self.backbone.model_dump(mode="json"),
            "optimizer": self.optimizer.model_dump(mode="json"),
            "balancer": self.balancer.model_dump(mode="json"),
            "seed": self.seed,
        }
        if self.numerics:
            identity["numerics"] = dict(self.numerics)
        return identity
