"""check(): "will this network train?" -- one forward/backward on a batch, then the findings.

Nothing of the model changes: parameters are only read, each ``.grad`` is put back as it was
(the very same tensor object, or None), buffers such as BatchNorm's running statistics are
restored in place, every module's training flag is restored, the monitor's hooks are removed and
the global torch RNG is forked, so dropout in the pass does not shift the user's random stream.

Example::

    >>> import torch, gradprobe
    >>> from torch import nn
    >>> from gradprobe.torch.check import check
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> layers = [m for _ in range(10) for m in (nn.Linear(32, 32), nn.Sigmoid())]
    >>> model = nn.Sequential(*layers, nn.Linear(32, 1))
    >>> result = check(model, torch.randn(64, 32), torch.randn(64, 1), nn.MSELoss())
    >>> [f.code for f in result.findings]
    ['vanishing']
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import nn

from gradprobe.diagnosis import Finding, Thresholds, diagnose, verdict
from gradprobe.errors import CaptureError, UsageError
from gradprobe.records import weight_rows
from gradprobe.torch.monitor import watch

TABLE_COLUMNS = (
    "depth",
    "layer",
    "kind",
    "activation",
    "grad_norm",
    "pe_grad_rms",
    "backward_norm",
    "act_rms",
    "saturated_frac",
    "dead_frac",
)


@dataclass(frozen=True)
class CheckResult:
    """What :func:`check` saw: the loss, the two record tables (one step) and the findings.

    Like a monitor it has ``to_pandas(table)``, so ``diagnose(result)`` and the notebook views
    accept it.
    """

    loss: float
    params: pd.DataFrame
    layers: pd.DataFrame
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        """True when no finding is an error."""
        return not any(f.severity == "error" for f in self.findings)

    @property
    def verdict(self) -> str:
        return verdict(self.findings)

    @property
    def table(self) -> pd.DataFrame:
        """One row per layer, input to output: weight gradient (batch and per-example), backward
        signal, activation RMS, saturated and dead fractions."""
        w = weight_rows(self.params)[["layer", "depth", "grad_norm", "pe_grad_rms"]]
        lay = self.layers.drop(columns=["step"])
        merged = w.merge(lay, on=["layer", "depth"], how="outer").sort_values("depth")
        return merged[list(TABLE_COLUMNS)].reset_index(drop=True)

    def to_pandas(self, table: str = "params") -> pd.DataFrame:
        if table not in ("params", "layers"):
            raise UsageError(f"unknown table {table!r}: expected one of params, layers")
        return self.params if table == "params" else self.layers

    def __str__(self) -> str:
        lines = [f"loss {self.loss:.4g}; verdict: {self.verdict}"]
        lines += [f"  [{f.severity}] {f.summary}" for f in self.findings]
        return "\n".join(lines)


@contextmanager
def _untouched(model: nn.Module) -> Iterator[None]:
    """Put back .grad, buffers and training flags of ``model`` on exit; fork the torch RNG."""
    grads = [(p, p.grad) for p in model.parameters()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    modes = [(m, m.training) for m in model.modules()]
    for p, _ in grads:
        p.grad = None  # backward must not accumulate into the user's gradient tensors
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        for p, g in grads:
            p.grad = g
        for m, training in modes:
            m.train(training)


def check(
    model: nn.Module,
    inputs: Any,
    targets: Any,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    *,
    train: bool = True,
    thresholds: Thresholds | dict[str, Any] | None = None,
) -> CheckResult:
    """One forward/backward of ``loss_fn(model(inputs), targets)``, recorded and diagnosed.

    ``train=True`` runs the pass in training mode (dropout and BatchNorm as in training); the
    model is left exactly as it was either way. Per-example gradients are recorded, so the
    verdict is free of the batch-mean trap (theory.md 9.3).
    """
    if not isinstance(model, nn.Module):
        raise CaptureError(f"check() expects a torch.nn.Module, got {type(model).__name__}")
    with _untouched(model):
        model.train(train)
        with watch(model, per_example=True) as mon:
            loss = loss_fn(model(inputs), targets)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise UsageError(
                    "loss_fn(model(inputs), targets) must return a scalar tensor, got "
                    f"{type(loss).__name__}{getattr(loss, 'shape', '')}"
                )
            loss.backward()
            mon.step()
        params, layers = mon.to_pandas("params"), mon.to_pandas("layers")
    findings = tuple(diagnose((params, layers), thresholds=thresholds))
    return CheckResult(float(loss.detach()), params, layers, findings)
