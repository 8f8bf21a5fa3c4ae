"""Layer statistics that ``torch.compile`` traces into the model's graph, with no graph break.

Inside a compiled region (``torch.compiler.is_compiling()``) the monitor's hooks cannot call the
fused C pass or numpy: dynamo would break the graph at each call. They call these functions
instead, which are built from torch operations only; dynamo inlines the hooks, inductor fuses the
reductions into the model's own kernels, and the results leave the graph as ordinary outputs:

- forward: :func:`layer_stats` turns a layer's output into one float64 vector of fixed shape,
  which the hook appends to a plain Python list (dynamo replays the append after the graph runs);
- backward: :func:`signal_probe` passes the output through an identity whose backward adds
  ``||dL/dh||^2`` to the gradient of a small leaf tensor (:func:`new_probe`). The gradient
  reaches that leaf as any parameter's does, so gradient accumulation over several backwards
  adds up as in eager mode, and the leaf is read after the backward (:func:`take_probe`), outside
  the compiled region. A tensor hook (``output.register_hook``) would also trace, but its Python
  body runs in the middle of the compiled backward and may not append to a list (dynamo breaks
  the graph: "HOP: Unsafe side effect").

Every vector is additive across the forwards of one step: :func:`fold` sums them (and reads a
unit as alive when any forward saw it positive). Sums of squares are taken in float64, exact from
1e-30 to 1e30 per element.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

# columns of a layer_stats vector; the per-unit "alive" flags follow them
SUM, SUMSQ, COUNT, SATURATED = range(4)
HEAD = 4


def layer_stats(
    out: torch.Tensor,
    low: float = -math.inf,
    high: float = math.inf,
    unit_dim: int | None = None,
) -> torch.Tensor:
    """A layer output's statistics as one float64 vector, traceable by dynamo.

    ``[sum, sum of squares, element count, count outside [low, high], alive_0, ..., alive_U-1]``:
    the sums in float64; the band compared in the output's dtype (as the fused pass does); with
    ``unit_dim``, one 1.0/0.0 flag per unit along that dimension, 1.0 when the unit is positive
    for some element of the other dimensions. Shape ``(4,)`` or ``(4 + U,)``, fixed for a given
    output shape, so the step's vectors of one layer can be summed.
    """
    x = out.detach()
    total = x.sum(dtype=torch.float64)
    sumsq = x.double().square().sum()  # float32 squares are exact in float64
    count = torch.full((), x.numel(), dtype=torch.float64, device=x.device)
    if math.isinf(low) and math.isinf(high):
        outside = torch.zeros((), dtype=torch.float64, device=x.device)
    else:
        outside = ((x < low) | (x > high)).sum(dtype=torch.float64)
    head = torch.stack([total, sumsq, count, outside])
    if unit_dim is None:
        return head
    ud = unit_dim % x.ndim
    others = tuple(d for d in range(x.ndim) if d != ud)
    alive = (x.amax(dim=others) > 0).double()
    return torch.cat([head, alive])


class _SignalProbe(torch.autograd.Function):
    """Identity on ``x``; its backward gives ``probe`` the gradient ``||dL/dx||^2``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, probe: torch.Tensor) -> torch.Tensor:
        ctx.set_materialize_grads(False)  # an output no loss used: no signal, not a zero one
        # a copy, not a view: autograd forbids in-place changes (nn.ReLU(inplace=True) after the
        # layer) of a view a custom Function returned, and ctx.mark_dirty(x) would fail for
        # layers that keep their own output for their backward (tanh inside the layer)
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor | None) -> tuple[Any, Any]:
        if grad is None:
            return None, None
        return grad, grad.detach().double().square().sum().reshape(1)


def new_probe(device: torch.device | str | None = None) -> torch.Tensor:
    """A leaf that collects a layer's ``||dL/dh||^2`` in its ``.grad`` (one per layer, made when
    the hooks are registered, never inside a compiled region)."""
    return torch.zeros(1, dtype=torch.float64, device=device, requires_grad=True)


def signal_probe(out: torch.Tensor, probe: torch.Tensor) -> torch.Tensor:
    """``out``'s values, through an identity whose backward adds ``||dL/dout||^2`` to
    ``probe.grad``. A forward hook returns it in place of the output (inductor fuses the copy
    into the graph), and keeps *this* tensor, not ``out``, if it keeps one past the hook."""
    return _SignalProbe.apply(out, probe)


def take_probe(probe: torch.Tensor) -> float | None:
    """The ``||dL/dh||^2`` summed since the last call (None when no backward reached the layer),
    and the probe made ready for the next step. Call outside the compiled region."""
    g = probe.grad
    if g is None:
        return None
    probe.grad = None
    return float(g.reshape(-1)[0])


def fold(vectors: Sequence[torch.Tensor]) -> tuple[np.ndarray, np.ndarray | None]:
    """One layer's :func:`layer_stats` vectors of a step, summed: moments ``(4,)`` (sum, sum of
    squares, count, saturated count) and per unit whether any forward saw it positive (None
    without units). One transfer to the host."""
    total = (torch.stack(list(vectors)).sum(0) if len(vectors) > 1 else vectors[0]).cpu().numpy()
    head = total[:HEAD].copy()
    return head, (total[HEAD:] > 0 if total.shape[0] > HEAD else None)
