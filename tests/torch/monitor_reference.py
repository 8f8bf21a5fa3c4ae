"""Slow, obvious references for the monitor's statistics: plain autograd and numpy."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def grad_stats(g: torch.Tensor) -> dict[str, float]:
    """Every gradient statistic of one tensor, the obvious way (float64 numpy)."""
    x = g.detach().double().numpy().ravel()
    fin = np.isfinite(x)
    return {
        "grad_norm": float(np.sqrt(np.sum(x * x))),
        "grad_rms": float(np.sqrt(np.mean(x * x))),
        "grad_mean": float(np.mean(x)),
        "grad_std": float(np.std(x)),
        "grad_max_abs": float(np.max(np.abs(x))),
        "grad_zero_frac": float(np.mean(x == 0)),
        "grad_nonfinite": float(np.sum(~fin)),
    }


def act_stats(outs: list[torch.Tensor], kind: str, unit_dim: int = -1) -> dict[str, float]:
    """Activation statistics over all the batches a step saw."""
    x = np.concatenate([o.detach().double().numpy().reshape(-1) for o in outs])
    res = {
        "act_mean": float(x.mean()),
        "act_std": float(x.std()),
        "act_rms": float(np.sqrt(np.mean(x * x))),
        "saturated_frac": math.nan,
        "dead_frac": math.nan,
    }
    if kind == "sigmoid":
        res["saturated_frac"] = float(np.mean(x * (1 - x) < 0.0025))
    elif kind == "tanh":
        res["saturated_frac"] = float(np.mean(1 - x * x < 0.01))
    elif kind == "relu":
        alive = None
        for o in outs:
            a = np.moveaxis(o.detach().numpy(), unit_dim, 0).reshape(o.shape[unit_dim], -1)
            pos = (a > 0).any(axis=1)
            alive = pos if alive is None else alive | pos
        res["dead_frac"] = float(1 - alive.mean())
    return res


class Recorder:
    """Forward hooks that keep each module's output and its gradient (the reference capture)."""

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        self.outputs: dict[str, list[torch.Tensor]] = {k: [] for k in modules}
        self.grads: dict[str, list[torch.Tensor]] = {k: [] for k in modules}
        self.handles = [m.register_forward_hook(self._hook(k)) for k, m in modules.items()]

    def _hook(self, key: str):  # type: ignore[no-untyped-def]
        def hook(module, inputs, out):  # type: ignore[no-untyped-def]
            self.outputs[key].append(out.detach().clone())
            if out.requires_grad:
                out.register_hook(lambda g: self.grads[key].append(g.detach().clone()))

        return hook

    def backward_norm(self, key: str) -> float:
        return math.sqrt(sum(float(g.double().square().sum()) for g in self.grads[key]))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
