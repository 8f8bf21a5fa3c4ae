"""Which Keras nonlinearity is which: the dispatch table for activation statistics.

Same families and thresholds as the PyTorch side (``gradprobe.torch._activations``), keyed by
the name of the Keras activation function (``keras.activations.sigmoid.__name__`` is
``"sigmoid"``) or by the class of a standalone activation layer:

- ``saturating`` (sigmoid, tanh): the fraction of elements whose derivative is under 1% of its
  maximum (sigmoid: s(1-s) < 0.0025; tanh: 1 - t^2 < 0.01).
- ``rectifier`` (relu, relu6, leaky_relu, elu, selu, celu, gelu, silu, mish, softplus): the fraction
  of dead units, units with no positive output for any example of the batch.
- anything else: mean, std and RMS only (measured, never guessed).

This module imports neither Keras nor any framework.
"""

from __future__ import annotations

from typing import Any

from gradprobe.stats import RECTIFIERS, SIGMOID, TANH, Activation

_RECTIFIERS = (*RECTIFIERS, "swish")  # Keras names SiLU "swish" too
BY_NAME: dict[str, Activation] = {
    "sigmoid": SIGMOID,
    "tanh": TANH,
    **{n: Activation("silu" if n == "swish" else n, "rectifier") for n in _RECTIFIERS},
}
# standalone activation layers whose class says what they compute
BY_LAYER_CLASS: dict[str, Activation] = {
    "ReLU": BY_NAME["relu"],
    "LeakyReLU": BY_NAME["leaky_relu"],
    "ELU": BY_NAME["elu"],
    "PReLU": Activation("prelu", "rectifier"),
    "Softmax": Activation("softmax", "other"),
}


def of_function(fn: Any) -> Activation | None:
    """The activation a Keras activation function computes; None for ``linear`` or no function."""
    name = getattr(fn, "__name__", None)
    if fn is None or name in (None, "linear"):
        return None
    return BY_NAME.get(name, Activation(str(name), "other"))


def of_layer(layer: Any) -> Activation | None:
    """The activation a standalone activation layer computes (``Activation``, ``ReLU``...)."""
    cls = type(layer).__name__
    if cls == "Activation":
        return of_function(getattr(layer, "activation", None))
    return BY_LAYER_CLASS.get(cls)
