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
SUM, SUMSQ, MAX_ABS, ZEROS, WSQ, USQ, NONFINITE = range(7)


def _flat64(t: Any) -> Any:
    return ops.reshape(ops.cast(t, F64), (-1,))


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
) -> Any:
    """Per tensor, in the order of ``grads``; (n, 7), float64 columns:

    sum, sum of squares, max |g|, exact zeros of the gradient; ||w||^2 of the weights
    ``before`` the update; ||after - before||^2 (NaN without ``after``); non-finite elements of
    the gradient.

    ``before`` and ``after`` are :func:`stack_groups` of the weights over ``groups``. Tensors of
    one shape are reduced together, so a statistic costs one op per shape, not per tensor: on
    CPU, per-op overhead, not arithmetic, is what a TensorFlow graph of small tensors spends.
    The non-finite count is taken only if some sum of squares is not finite (a finite sum of
    float64 squares means every element is finite).
    """
    blocks, sumsq = [], []
    for j, g in enumerate(groups):
        x = ops.cast(ops.reshape(ops.stack([grads[i] for i in g]), (len(g), -1)), F64)
        w = ops.cast(before[j], F64)
        ss = ops.sum(ops.square(x), axis=1)
        usq = (
            ops.sum(ops.square(ops.cast(after[j], F64) - w), axis=1)
            if after is not None
            else ops.full((len(g),), float("nan"), F64)
        )
        zeros = ops.sum(ops.cast(ops.equal(x, 0.0), F64), axis=1)
        stats = [ops.sum(x, axis=1), ss, ops.max(ops.abs(x), axis=1), zeros]
        blocks.append(ops.stack([*stats, ops.sum(ops.square(w), axis=1), usq], axis=1))
        sumsq.append(ss)
    order = [i for g in groups for i in g]
    inverse = np.argsort(np.asarray(order, dtype=np.int64)).astype("int32")
    block = ops.take(ops.concatenate(blocks, axis=0), inverse, axis=0)
    nonfinite = ops.cond(
        ops.all(ops.isfinite(ops.concatenate(sumsq))),
        lambda: ops.zeros((len(order),), F64),
        lambda: ops.take(_nonfinite_counts(grads, groups), inverse, axis=0),
    )
    return ops.concatenate([block, ops.expand_dims(nonfinite, 1)], axis=1)


def _nonfinite_counts(grads: Sequence[Any], groups: list[list[int]]) -> Any:
    counts = []
    for g in groups:
        x = ops.reshape(ops.stack([grads[i] for i in g]), (len(g), -1))
        counts.append(ops.sum(ops.cast(ops.logical_not(ops.isfinite(x)), F64), axis=1))
    return ops.concatenate(counts)


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
            out = ops.logical_or(ops.less(x, band[0]), ops.greater(x, band[1]))
            sat = ops.sum(ops.cast(out, F64), axis=1)
        else:
            sat = ops.zeros((len(idx),), F64)
        blocks.append(
            ops.stack([ops.sum(x, axis=1), ops.sum(ops.square(x), axis=1), count, sat], 1)
        )
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
