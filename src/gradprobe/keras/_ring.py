"""A ring of step vectors on the device: written inside fit's step, read in one transfer.

The monitor's recorded steps never cross to the host one by one. Inside the step, the optimizer
wrapper counts the call (:meth:`Ring.tick`) and writes the step's vector, prefixed by that count,
into row ``(count - 1) % rows`` of a ``(rows, 1 + width)`` float64 buffer (:meth:`Ring.write`, an
in-place row update). The host reads the whole buffer at once (:meth:`Ring.read`) before it can
wrap. A row whose count is not the expected one was not written: that step's update was skipped
(a ``LossScaleOptimizer`` with non-finite gradients).

Raw backend objects (a ``tf.Variable``, a torch tensor) rather than ``keras.Variable``: the row
update must be in place, and Keras's ``assign`` would copy the whole buffer at every step.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops


class Ring:
    """``rows`` step vectors of ``width`` numbers, each prefixed by its call count."""

    def __init__(self, rows: int, width: int) -> None:
        self.rows, self.width = rows, width
        self._tf = keras.backend.backend() == "tensorflow"
        if self._tf:
            import tensorflow as tf

            self._buf = tf.Variable(tf.zeros((rows, 1 + width), tf.float64), trainable=False)
            self._count = tf.Variable(tf.zeros((), tf.float64), trainable=False)
        else:  # torch: the step runs eagerly, tensors are updated in place
            self._buf = ops.zeros((rows, 1 + width), "float64")
            self._count = ops.zeros((), "float64")

    def tick(self) -> None:
        """One more recorded call (inside the step, before its :meth:`write`)."""
        if self._tf:
            self._count.assign_add(1.0)
        else:
            self._count += 1.0

    def write(self, vec: Any) -> None:
        """Store the step's vector at the row of the current count (inside the step)."""
        if self._tf:
            import tensorflow as tf

            count = self._count.read_value()
            slot = tf.cast(tf.math.floormod(count - 1.0, self.rows), tf.int32)
            row = tf.concat([tf.reshape(count, (1,)), vec], 0)
            self._buf.scatter_nd_update(tf.reshape(slot, (1, 1)), tf.reshape(row, (1, -1)))
        else:
            import torch

            with torch.no_grad():
                count = self._count.reshape(1)
                slot = torch.remainder(count - 1.0, self.rows).long()
                row = torch.cat([count, vec.to(torch.float64)])
                self._buf.index_copy_(0, slot, row.reshape(1, -1))

    def count(self) -> int:
        """Calls counted on the device so far (one small transfer)."""
        return int(self._host(self._count))

    def read(self) -> np.ndarray:
        """The whole buffer on the host, ``(rows, 1 + width)`` (one transfer)."""
        return np.array(self._host(self._buf), dtype=np.float64)

    def _host(self, x: Any) -> Any:
        return x.numpy() if self._tf else ops.convert_to_numpy(x)
