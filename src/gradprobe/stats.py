"""Moments to statistics: the one framework-free arithmetic behind every record row.

A framework adapter (the torch monitor, the Keras callback, the batched lab trainer) reduces each
tensor on its device to a few float64 *moments* and hands them over; the functions here turn
moments into the columns of :mod:`gradprobe.records`. They are pure, vectorised over rows, and
use numpy only (this module never imports torch or TensorFlow), so the three adapters compute
every statistic the same way.

Moments of a tensor x with n elements (all float64):

- ``total`` = sum x, ``sumsq`` = sum x^2, ``count`` = n;
- mean = total / n, rms = sqrt(sumsq / n), norm = sqrt(sumsq);
- std (population) = sqrt(max(sumsq / n - mean^2, 0)). The difference of two moments loses the
  digits they share: a std below about 1e-8 x rms is rounding noise of the moments, not signal;
  every element size from 1e-30 to 1e30 is otherwise exact to float64 rounding.

Ratios: ``a / b`` is 0 for 0/b, inf for a/0 with a > 0 (a zero-initialised bias that moved), and
NaN for 0/0 -- "nothing to compare", never read as infinite by :mod:`gradprobe.diagnosis`.
NaN in any moment means "not measured" and stays NaN in every statistic built from it.

The activation families and their constants live here too (see :class:`Activation`).

Example:
    >>> import numpy as np
    >>> x = np.array([1.0, -2.0, 3.0, 0.0])
    >>> cols = param_columns(x.sum(), (x * x).sum(), 3.0, 1.0, 0.0, 4.0, 1e-6, 4)
    >>> float(cols["grad_norm"]) ** 2, float(cols["grad_std"]) == float(np.std(x))
    (14.0, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Array = np.ndarray

# ------------------------------------------------------------------ activations
SATURATING, RECTIFIER, OTHER = "saturating", "rectifier", "other"
FAMILIES = (SATURATING, RECTIFIER, OTHER)

LEAKY_SLOPE = 0.2
"""The negative slope of ``leaky_relu`` everywhere in gradprobe: the trained nets
(:mod:`gradprobe.experiments`, the batched lab trainer) and the theory use this one value
(Keras's default for ``keras.activations.leaky_relu``)."""

_S = math.sqrt(0.25 - 0.0025)  # sigmoid: s(1-s) < 0.0025  <=>  |s - 0.5| > _S
_T = math.sqrt(0.99)  # tanh: 1 - t^2 < 0.01  <=>  |t| > _T
SIGMOID_BAND = (0.5 - _S, 0.5 + _S)
TANH_BAND = (-_T, _T)


@dataclass(frozen=True)
class Activation:
    """A nonlinearity gradprobe knows: its name, its family and how to read its output.

    ``family`` decides the extra statistic: ``saturating`` (sigmoid, tanh) gets the fraction of
    outputs outside ``[low, high]``, where the derivative is under 1% of its maximum (sigmoid:
    s(1-s) < 0.0025; tanh: 1 - t^2 < 0.01); ``rectifier`` (the ReLU family) gets the fraction of
    dead units, units with no positive output for any example; ``other`` only mean, std and RMS.
    ``nonneg``: a rectifier whose output is never negative (relu, relu6, softplus), so a unit is
    alive exactly when its sum over the batch is positive.
    """

    name: str
    family: str
    low: float = -math.inf
    high: float = math.inf
    nonneg: bool = False


SIGMOID = Activation("sigmoid", SATURATING, *SIGMOID_BAND)
TANH = Activation("tanh", SATURATING, *TANH_BAND)
RECTIFIERS = (
    "relu",
    "relu6",
    "leaky_relu",
    "elu",
    "selu",
    "celu",
    "gelu",
    "silu",
    "mish",
    "softplus",
)
NONNEGATIVE = ("relu", "relu6", "softplus")


def rectifier(name: str) -> Activation:
    """The :class:`Activation` of a ReLU-family nonlinearity called ``name``."""
    return Activation(name, RECTIFIER, nonneg=name in NONNEGATIVE)


BY_NAME: dict[str, Activation] = {
    "sigmoid": SIGMOID,
    "tanh": TANH,
    **{n: rectifier(n) for n in RECTIFIERS},
}


def saturated_count(x: Array, act: Activation) -> Array:
    """Per row of ``x`` (rows, n): elements outside the activation's band (0 for non-saturating)."""
    x = np.asarray(x, dtype=np.float64)
    if act.family != SATURATING:
        return np.zeros(x.shape[0])
    return ((x < act.low) | (x > act.high)).sum(axis=1).astype(np.float64)


# ------------------------------------------------------------------ arithmetic
def _f(x: object) -> Array:
    return np.asarray(x, dtype=np.float64)


def ratio(num: object, den: object) -> Array:
    """num / den elementwise: 0/0 -> NaN, a/0 -> inf for a > 0, no warnings."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return _f(num) / _f(den)


def mean(total: object, count: object) -> Array:
    """total / count (NaN for an empty tensor)."""
    return ratio(total, count)


def rms(sumsq: object, count: object) -> Array:
    """sqrt(sumsq / count)."""
    with np.errstate(invalid="ignore"):
        return np.sqrt(ratio(sumsq, count))


def norm(sumsq: object) -> Array:
    """sqrt(sumsq), the L2 norm from its square."""
    with np.errstate(invalid="ignore"):
        return np.sqrt(_f(sumsq))


def std(total: object, sumsq: object, count: object) -> Array:
    """Population standard deviation from the moments: sqrt(max(sumsq/n - mean^2, 0))."""
    m = mean(total, count)
    with np.errstate(invalid="ignore", over="ignore"):
        var = ratio(sumsq, count) - m * m
        return np.sqrt(np.maximum(var, 0.0))  # NaN (not measured) stays NaN


def fraction(part: object, whole: object) -> Array:
    """part / whole, a share of elements (NaN when there are none)."""
    return ratio(part, whole)


def param_columns(
    total: object,
    sumsq: object,
    max_abs: object,
    zeros: object,
    nonfinite: object,
    w_sumsq: object,
    u_sumsq: object,
    numel: object,
) -> dict[str, Array]:
    """The ``params`` table's statistics (all but ``pe_grad_rms``) from per-row moments.

    ``total``, ``sumsq``, ``max_abs``, ``zeros``, ``nonfinite``: of the gradient (sum, sum of
    squares, max |g|, exact zeros, NaN/inf elements); ``w_sumsq``: ||W||^2 before the update;
    ``u_sumsq``: ||W_after - W_before||^2 (NaN when no update was seen); ``numel``: elements.
    """
    n = _f(numel)
    wn, un = norm(w_sumsq), norm(u_sumsq)
    return {
        "grad_norm": norm(sumsq),
        "grad_rms": rms(sumsq, n),
        "grad_mean": mean(total, n),
        "grad_std": std(total, sumsq, n),
        "grad_max_abs": _f(max_abs),
        "grad_zero_frac": fraction(zeros, n),
        "grad_nonfinite": _f(nonfinite),
        "weight_norm": wn,
        "update_norm": un,
        "update_ratio": ratio(un, wn),
    }


def layer_columns(
    total: object,
    sumsq: object,
    count: object,
    saturated: object,
    dead: object,
    b_sumsq: object,
    saturating: object,
    rectifying: object | None = None,
) -> dict[str, Array]:
    """The ``layers`` table's statistics from per-row moments of each layer's output.

    ``total``, ``sumsq``, ``count``, ``saturated``: sum, sum of squares, element count and
    elements outside the saturation band of the activation output; ``dead``: the dead-unit
    fraction (as measured); ``b_sumsq``: ||dL/dh||^2 (NaN: not measured); ``saturating``
    (bool per row): the saturated fraction applies (else NaN); ``rectifying`` (bool per row,
    optional): the dead fraction applies (else NaN; None keeps ``dead`` as given).
    """
    dead_frac = _f(dead)
    if rectifying is not None:
        dead_frac = np.where(np.asarray(rectifying, dtype=bool), dead_frac, np.nan)
    return {
        "act_mean": mean(total, count),
        "act_std": std(total, sumsq, count),
        "act_rms": rms(sumsq, count),
        "saturated_frac": np.where(
            np.asarray(saturating, dtype=bool), fraction(saturated, count), np.nan
        ),
        "dead_frac": dead_frac,
        "backward_norm": norm(b_sumsq),
    }
