"""``rsa``: representation similarity analysis (Vandenhende et al., Branched Multi-Task Networks).

One single-task network is trained per task (baseline backbone and optimizer, equal
weighting, the context's seed). Each network's backbone is run stage by stage, in eval
mode, on fixed validation rows (the probe). Per stage and task, the representation
dissimilarity matrix is ``RDM = 1 - Pearson correlation`` between the probe rows'
flattened features; two tasks are compared at a stage by the Spearman correlation of
their RDMs' upper triangles. ``values`` is the matrix of one stage (``stage``, default
the last); ``extra["stages"][s]`` holds every stage's matrix (symmetric, diagonal 1).
The cache holds results, not weights, so the networks are always trained here; their
results are stored in the cache for later reuse.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt
import torch
from scipy.stats import spearmanr

from autotask.affinity.estimators.base import (
    AffinityEstimator,
    EstimationContext,
    ProgressCallback,
    reference_job,
)
from autotask.backbones import build_backbone
from autotask.errors import ConfigError, TrialDiverged
from autotask.select.matrix import AffinityMatrix

if TYPE_CHECKING:
    from autotask.models.tree import TreeNetwork

__all__ = ["RepresentationSimilarity", "rdm_similarity", "stage_rdms"]

FloatArray = npt.NDArray[np.float64]


class RepresentationSimilarity(AffinityEstimator):
    """Spearman correlation of single-task networks' per-stage RDMs on fixed rows."""

    name: ClassVar[str] = "rsa"
    description: ClassVar[str] = (
        "representation similarity of single-task networks per backbone stage: Spearman "
        "correlation of their dissimilarity matrices on fixed validation rows"
    )
    defaults: ClassVar[dict[str, Any]] = {"probe_rows": 256, "stage": -1}

    def validate(self) -> None:
        self._positive_int("probe_rows")
        stage = self.settings["stage"]
        if isinstance(stage, bool) or not isinstance(stage, int):
            raise ConfigError(f"affinity estimator 'rsa': stage must be an integer, got {stage!r}")

    def estimate(
        self, context: EstimationContext, progress: ProgressCallback | None = None
    ) -> AffinityMatrix:
        started = time.perf_counter()
        runner = context.runner
        tasks = tuple(runner.tasks)
        spec = context.baseline_backbone
        n_stages = build_backbone(spec.name, runner.interface.input_shape, **spec.params).num_stages
        stage = self.settings["stage"]
        if not -n_stages <= stage < n_stages:
            raise ConfigError(
                f"affinity estimator 'rsa': stage {stage} is out of range for a backbone "
                f"with {n_stages} stages"
            )
        probe = runner.data["val"].x[: self.settings["probe_rows"]].to(runner.device)
        if probe.shape[0] < 3:
            raise ConfigError(
                "affinity estimator 'rsa': needs at least 3 validation rows to compare "
                f"dissimilarity matrices, got {probe.shape[0]} (probe_rows "
                f"{self.settings['probe_rows']}, validation split {len(runner.data['val'])})"
            )
        rdms: list[list[FloatArray]] = []
        for done, task in enumerate(tasks, start=1):
            rdms.append(stage_rdms(_train_single(context, task), probe))
            if progress is not None:
                progress(done, len(tasks), task)
        stages = [rdm_similarity([r[s] for r in rdms]) for s in range(n_stages)]
        return AffinityMatrix(
            tasks,
            stages[stage],
            self.name,
            dict(self.settings),
            split="val",
            steps=len(tasks),
            seconds=time.perf_counter() - started,
            extra={
                "stages": [m.tolist() for m in stages],
                "probe_rows": int(probe.shape[0]),
            },
        )


def _train_single(context: EstimationContext, task: str) -> TreeNetwork:
    """``task``'s single-task network with the baseline settings (result cached)."""
    runner = context.runner
    job = reference_job(context, (task,))
    net, result = runner.train(job)
    if not result.ok:
        raise TrialDiverged(f"single-task network of {task!r} diverged: {result.reason}")
    if runner.cache.get(job) is None:
        runner.cache.put(job, result, runner.study_name)
    return net


@torch.no_grad()
def stage_rdms(net: TreeNetwork, probe: torch.Tensor) -> list[FloatArray]:
    """Upper triangle of each root stage's RDM (``1 - corr`` between probe rows), eval mode.

    A row whose features are constant has no correlation; it is taken as 0 (RDM 1).
    """
    was_training = net.training
    net.eval()
    rows = probe.shape[0]
    upper = torch.triu_indices(rows, rows, 1)
    out: list[FloatArray] = []
    h = probe
    for block in net.blocks["n0"].children():
        h = block(h)
        corr = torch.nan_to_num(torch.corrcoef(h.reshape(rows, -1).to("cpu").double()), nan=0.0)
        out.append((1.0 - corr[upper[0], upper[1]]).cpu().numpy())
    net.train(was_training)
    return out


def rdm_similarity(rdms: list[FloatArray]) -> FloatArray:
    """Spearman correlation between every two tasks' RDM upper triangles (diagonal 1)."""
    n = len(rdms)
    sim = np.ones((n, n))
    if n >= 2:
        rho = np.asarray(spearmanr(np.stack(rdms, axis=1)).statistic, dtype=np.float64)
        sim = np.array([[1.0, float(rho)], [float(rho), 1.0]]) if n == 2 else rho.copy()
        np.fill_diagonal(sim, 1.0)
    return sim
