"""What the optimizer's next step would do, for several candidate gradients at once.

The lookahead affinity asks "where would this step move the shared parameters if only
task ``i``'s gradient drove it?" with the *real* update rule: the optimizer's learning
rate, weight decay and its state (momentum buffers, Adam moments and step count) as they
stand before the step. :func:`lookahead_parameters` computes that for a stack of ``k``
gradients (``[k, *param.shape]``) without touching the optimizer or the parameters.

Supported: ``torch.optim.SGD`` (momentum, dampening, Nesterov, weight decay), ``Adam`` and
``AdamW`` (bias correction, L2 or decoupled weight decay). Anything else raises
:class:`~autotask.errors.ConfigError` rather than silently probing with plain SGD.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from autotask.errors import ConfigError

__all__ = ["SUPPORTED", "lookahead_parameters"]

SUPPORTED = ("SGD", "Adam", "AdamW")


def _group_of(optimizer: torch.optim.Optimizer) -> dict[int, dict[str, Any]]:
    return {id(p): group for group in optimizer.param_groups for p in group["params"]}


def _scalar(value: Any) -> float:
    return float(value.item()) if isinstance(value, torch.Tensor) else float(value)


def lookahead_parameters(
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
) -> list[torch.Tensor]:
    """``params[j]`` after one step of ``optimizer`` with gradient ``grads[j][i]``, for every
    candidate ``i``: a list of ``[k, *params[j].shape]`` tensors (no autograd history)."""
    kind = type(optimizer).__name__
    if kind not in SUPPORTED:
        raise ConfigError(
            f"lookahead affinity supports the optimizers {', '.join(SUPPORTED)}, not {kind}"
        )
    groups = _group_of(optimizer)
    out: list[torch.Tensor] = []
    with torch.no_grad():
        for param, grad in zip(params, grads, strict=True):
            group = groups.get(id(param))
            if group is None:
                raise ConfigError("lookahead affinity: a shared parameter is not in the optimizer")
            state = optimizer.state.get(param, {})
            p = param.detach()
            g = grad.detach().to(p.dtype)
            if group.get("maximize", False):
                g = -g
            if kind == "SGD":
                out.append(_sgd(p, g, group, state))
            else:
                out.append(_adam(p, g, group, state, decoupled=kind == "AdamW"))
    return out


def _sgd(
    p: torch.Tensor, g: torch.Tensor, group: dict[str, Any], state: dict[str, Any]
) -> torch.Tensor:
    lr, wd = _scalar(group["lr"]), float(group["weight_decay"])
    momentum, dampening = float(group["momentum"]), float(group["dampening"])
    if wd != 0:
        g = g + wd * p
    if momentum != 0:
        buf = state.get("momentum_buffer")
        buf = g if buf is None else momentum * buf + (1 - dampening) * g
        g = g + momentum * buf if group["nesterov"] else buf
    return p - lr * g


def _adam(
    p: torch.Tensor,
    g: torch.Tensor,
    group: dict[str, Any],
    state: dict[str, Any],
    *,
    decoupled: bool,
) -> torch.Tensor:
    if group.get("amsgrad", False):
        raise ConfigError("lookahead affinity does not support Adam with amsgrad")
    lr, wd, eps = _scalar(group["lr"]), float(group["weight_decay"]), float(group["eps"])
    beta1, beta2 = (_scalar(b) for b in group["betas"])
    step = _scalar(state["step"]) + 1 if "step" in state else 1.0
    m = state.get("exp_avg", torch.zeros_like(p))
    v = state.get("exp_avg_sq", torch.zeros_like(p))
    base = p
    if wd != 0:
        if decoupled:
            base = p * (1 - lr * wd)
        else:
            g = g + wd * p
    m_new = beta1 * m + (1 - beta1) * g
    v_new = beta2 * v + (1 - beta2) * g * g
    bias1, bias2 = 1 - beta1**step, 1 - beta2**step
    denom = (v_new.sqrt() / bias2**0.5).add_(eps)
    moved: torch.Tensor = base - (lr / bias1) * m_new / denom
    return moved
