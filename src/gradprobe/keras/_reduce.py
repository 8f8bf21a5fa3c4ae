"""Reductions of tensors to a few scalars with ``keras.ops``, inside the training step.

Every function here is pure and built from backend ops only, so it runs inside fit's compiled
step (a ``tf.function`` on TensorFlow, eager on torch) and never moves a tensor to the host.
Sums are taken in float64, like the PyTorch side. Per-tensor statistics of many tensors use one
concatenation and segment reductions instead of a few ops per tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from keras import ops

from gradprobe.keras._activations import Activation

F64 = "float64"
# columns of the per-tensor block
SUM, SUMSQ, MAX_ABS, ZEROS, NONFINITE = range(5)
# columns of the per-activation block
A_SUM, A_SUMSQ, A_COUNT, A_SAT = range(4)


def segment_ids(sizes: Sequence[int]) -> np.ndarray:
    """Segment id of every element of the concatenation of tensors of ``sizes`` elements."""
    return np.repeat(np.arange(len(sizes), dtype=np.int32), np.asarray(sizes, dtype=np.int64))


def flat64(tensors: Sequence[Any]) -> Any:
    """All elements of ``tensors``, flattened, concatenated and cast to float64."""
    return ops.concatenate([ops.reshape(ops.cast(t, F64), (-1,)) for t in tensors])


def moments(tensors: Sequence[Any], ids: np.ndarray) -> Any:
    """Per tensor: sum, sum of squares, max |x|, exact zeros, non-finite elements; (n, 5).

    ``ids`` is :func:`segment_ids` of the tensors' sizes (a constant of the step).
    """
    n = len(tensors)
    x = flat64(tensors)
    seg = ops.convert_to_tensor(ids)

    def ssum(v: Any) -> Any:
        return ops.segment_sum(v, seg, num_segments=n)

    finite = ops.isfinite(x)
    return ops.stack(
        [
            ssum(x),
            ssum(ops.square(x)),
            ops.segment_max(ops.abs(x), seg, num_segments=n),
            ssum(ops.cast(ops.equal(x, 0.0), F64)),
            ssum(ops.cast(ops.logical_not(finite), F64)),
        ],
        axis=1,
    )


def sq_norms(tensors: Sequence[Any], ids: np.ndarray) -> Any:
    """Per tensor ||x||^2 (float64), shape (n,)."""
    seg = ops.convert_to_tensor(ids)
    return ops.segment_sum(ops.square(flat64(tensors)), seg, num_segments=len(tensors))


def activation_moments(a: Any, act: Activation | None) -> Any:
    """sum, sum of squares, element count and saturated count of an activation output; (4,)."""
    x = ops.reshape(ops.cast(a, F64), (-1,))
    count = ops.cast(ops.size(x), F64)
    if act is not None and act.family == "saturating":
        out = ops.logical_or(ops.less(x, act.low), ops.greater(x, act.high))
        sat = ops.sum(ops.cast(out, F64))
    else:
        sat = ops.zeros((), F64)
    return ops.stack([ops.sum(x), ops.sum(ops.square(x)), count, sat])


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
