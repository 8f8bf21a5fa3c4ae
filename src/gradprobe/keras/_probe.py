"""Gradients of the compiled loss on a fixed batch, for the monitor's probe mode.

The only backend-specific code of the Keras side: each backend's own autodiff, imported only when
that backend is the one Keras runs on.
"""

from __future__ import annotations

from typing import Any

import keras

from gradprobe.errors import CaptureError


def _loss(model: Any, x: Any, y: Any) -> Any:
    y_pred = model(x, training=False)
    return model.compute_loss(x=x, y=y, y_pred=y_pred)


def gradients(model: Any, x: Any, y: Any) -> list[Any]:
    """d(compiled loss)/d(trainable variables) on ``(x, y)``, with the current weights."""
    backend = keras.backend.backend()
    variables = list(model.trainable_variables)
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = _loss(model, x, y)
        return list(tape.gradient(loss, variables))
    if backend == "torch":
        import torch

        loss = _loss(model, x, y)
        values = [v.value for v in variables]
        return list(torch.autograd.grad(loss, values, allow_unused=True))
    raise CaptureError(
        f"probe mode needs the TensorFlow or torch backend of Keras, got {backend!r}"
    )
