"""Reductions of tensors to a few scalars with ``keras.ops``, inside the training step.

Every function here is pure and built from backend ops only, so it runs inside fit's compiled
step (a ``tf.function`` on TensorFlow, eager on torch) and never moves a tensor to the host.
Sums are taken in float64, like the PyTorch side.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from keras import ops

from gradprobe.keras._activations import Activation

F64 = "float64"
# columns of the per-tensor block (param_stats)
SUM, SUMSQ, MAX_ABS, WSQ, USQ, ZEROS, NONFINITE = range(7)


def shape_groups(tensors: Sequence[Any]) -> list[list[int]]:
    """Indices of ``tensors`` grouped by (shape, dtype), groups in order of first appearance."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((tuple(t.shape), str(t.dtype)), []).append(i)
    return list(groups.values())


def stack_groups(tensors: Sequence[Any], groups: list[list[int]], copy: bool = True) -> list[Any]:
    """Each group as one ``(k, numel)`` tensor; with ``copy``, unaffected by later updates."""
    return [
        ops.reshape(ops.stack([tensors[i] for i in g]), (len(g), -1))
        if len(g) > 1
        else ops.reshape(ops.copy(tensors[g[0]]) if copy else tensors[g[0]], (1, -1))
        for g in groups
    ]


def param_stats(
    grads: Sequence[Any],
    before: list[Any],
    after: list[Any] | None,
    groups: list[list[int]],
    lr_sq: Any = None,
) -> Any:
    """Per tensor, in the order of ``grads``; (n, 7), float64 columns (SUM ... NONFINITE):

    sum, sum of squares, max |g| of the gradient; ||w||^2 of the weights ``before`` the update;
    ||after - before||^2, or, for a step known to be ``-lr * g``, ``lr_sq * ||g||^2`` (NaN with
    neither); exact zeros and non-finite elements of the gradient.

    ``before`` and ``after`` are :func:`stack_groups` of the weights over ``groups``. Tensors of
    one shape are reduced together, so a statistic costs one op per shape, not per tensor: on
    CPU, per-op overhead, not arithmetic, is what a TensorFlow graph of small tensors spends.
    Counts go through casts to bool (``x != 0``) and ``isfinite``, not ``equal``, which is
    several times slower on TensorFlow's CPU kernels.
    """
    blocks = []
    for j, g in enumerate(groups):
        raw = ops.reshape(ops.stack([grads[i] for i in g]), (len(g), -1))
        x, w = ops.cast(raw, F64), ops.cast(before[j], F64)
        n = ops.cast(ops.shape(raw)[1], F64)
        gsq = ops.sum(ops.square(x), axis=1)
        if after is not None:  # the difference in the weights' dtype: exact for a small update
            usq = ops.sum(ops.square(ops.cast(after[j] - before[j], F64)), axis=1)
        elif lr_sq is not None:
            usq = lr_sq * gsq
        else:
            usq = ops.full((len(g),), float("nan"), F64)
        cols = [
            ops.sum(x, axis=1),
            gsq,
            ops.cast(ops.max(ops.abs(raw), axis=1), F64),  # exact in any float dtype
            ops.sum(ops.square(w), axis=1),
            usq,
            n - _count(ops.cast(raw, "bool")),
            n - _count(ops.isfinite(raw)),
        ]
        blocks.append(ops.stack(cols, axis=1))
    order = [i for g in groups for i in g]
    inverse = np.argsort(np.asarray(order, dtype=np.int64)).astype("int32")
    return ops.take(ops.concatenate(blocks, axis=0), inverse, axis=0)


def _count(mask: Any) -> Any:
    return ops.sum(ops.cast(mask, F64), axis=1)


def activation_stats(outs: Sequence[tuple[Any, Activation | None]]) -> tuple[list[int], Any]:
    """sum, sum of squares, element count and saturated count of activation outputs.

    ``outs`` are (output, activation) pairs; outputs of one shape and activation are reduced
    together. Returns the order of the rows (indices into ``outs``) and the rows, (n, 4).
    """
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, (a, act) in enumerate(outs):
        band = (act.low, act.high) if act is not None and act.family == "saturating" else None
        groups.setdefault((tuple(a.shape), str(a.dtype), band), []).append(i)
    order, blocks = [], []
    for (_, _, band), idx in groups.items():
        x = ops.cast(ops.reshape(ops.stack([outs[i][0] for i in idx]), (len(idx), -1)), F64)
        count = ops.full((len(idx),), ops.cast(ops.shape(x)[1], F64), F64)
        if band is not None:
            sat = _count(ops.logical_or(ops.less(x, band[0]), ops.greater(x, band[1])))
        else:
            sat = ops.zeros((len(idx),), F64)
        sums = [ops.sum(x, axis=1), ops.sum(ops.square(x), axis=1)]
        blocks.append(ops.stack([*sums, count, sat], axis=1))
        order += idx
    return order, ops.concatenate(blocks, axis=0)


def alive_fractions(outs: Sequence[Any]) -> tuple[list[int], Any]:
    """Per output (rank >= 2, channels last): the fraction of units positive for some example.

    Outputs of one shape are reduced together. Returns the order of the values and the values.
    """
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, a in enumerate(outs):
        groups.setdefault((tuple(a.shape), str(a.dtype)), []).append(i)
    order, blocks = [], []
    for (shape, _), idx in groups.items():
        x = ops.reshape(ops.stack([outs[i] for i in idx]), (len(idx), -1, shape[-1]))
        blocks.append(ops.mean(ops.cast(ops.greater(ops.max(x, axis=1), 0), F64), axis=1))
        order += idx
    return order, ops.concatenate(blocks, axis=0)


def by_layer(rows: Any, owners: Sequence[int], n_layers: int) -> Any:
    """Rows ``(r, k)`` summed per owning layer: ``(n_layers, k)``, NaN for a layer with none."""
    nan = np.where(np.isin(np.arange(n_layers), np.asarray(owners, dtype=np.int64)), 0.0, np.nan)
    summed = ops.segment_sum(rows, np.asarray(owners, dtype="int32"), num_segments=n_layers)
    return summed + ops.convert_to_tensor(nan[:, None], F64)


def alive_units(a: Any) -> Any:
    """Per unit (last axis, channels-last): 1.0 if any example gave a positive output."""
    x = ops.reshape(a, (-1, ops.shape(a)[-1]))
    return ops.cast(ops.greater(ops.max(x, axis=0), 0), F64)


def sq_norm(t: Any) -> Any:
    """||t||^2 in float64 (a scalar tensor)."""
    return ops.sum(ops.square(ops.cast(t, F64)))


def row_sq_norms(t: Any) -> Any:
    """Per example (first axis) squared norm of the rest, float64, shape (batch,)."""
    x = ops.cast(t, F64)
    return ops.sum(ops.reshape(ops.square(x), (ops.shape(x)[0], -1)), axis=1)
