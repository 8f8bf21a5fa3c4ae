"""Reductions of tensors to a few scalars with ``keras.ops``, inside the training step.

Every function here is pure and built from backend ops only, so it runs inside fit's compiled
step (a ``tf.function`` on TensorFlow, eager on torch) and never moves a tensor to the host.
Sums are taken in float64, like the PyTorch side.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keras import ops

from gradprobe.keras._activations import Activation

F64 = "float64"
# columns of the per-tensor block
SUM, SUMSQ, MAX_ABS, ZEROS, NONFINITE = range(5)
# columns of the per-activation block
A_SUM, A_SUMSQ, A_COUNT, A_SAT = range(4)


def _flat64(t: Any) -> Any:
    return ops.reshape(ops.cast(t, F64), (-1,))


def moments(tensors: Sequence[Any]) -> Any:
    """Per tensor: sum, sum of squares, max |x|, exact zeros, non-finite elements; (n, 5).

    One small reduction per statistic and tensor: on CPU this is several times faster in a
    TensorFlow graph than segment reductions over the concatenation.
    """
    rows = []
    for t in tensors:
        x = _flat64(t)
        rows.append(
            ops.stack(
                [
                    ops.sum(x),
                    ops.sum(ops.square(x)),
                    ops.max(ops.abs(x)),
                    ops.sum(ops.cast(ops.equal(x, 0.0), F64)),
                    ops.sum(ops.cast(ops.logical_not(ops.isfinite(x)), F64)),
                ]
            )
        )
    return ops.stack(rows)


def sq_norms(tensors: Sequence[Any]) -> Any:
    """Per tensor ||x||^2 (float64), shape (n,)."""
    return ops.stack([ops.sum(ops.square(_flat64(t))) for t in tensors])


def diff_sq_norms(after: Sequence[Any], before: Sequence[Any]) -> Any:
    """Per tensor ||after - before||^2 (float64), shape (n,)."""
    return ops.stack(
        [ops.sum(ops.square(_flat64(a) - _flat64(b))) for a, b in zip(after, before, strict=True)]
    )


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
