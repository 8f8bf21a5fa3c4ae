"""The activation table: phi, phi' and their Gaussian moments.

For a pre-activation u ~ N(0, q) the recursion needs E[phi(u)^2], E[phi'(u)^2], E[phi'(u)^4] and,
for the two-point (batch) version, E[phi(u_a) phi(u_b)] and E[phi'(u_a) phi'(u_b)] for correlated
u_a, u_b. Piecewise-linear activations (linear, ReLU, leaky ReLU) use closed forms -- the arc-cosine
kernel, cos(theta) = c -- everything else uses the trapezoid rule of :mod:`gradprobe.theory._gauss`.
Leaky ReLU has the negative slope the trained nets use, :data:`gradprobe.stats.LEAKY_SLOPE` (0.2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gradprobe.errors import UnknownChoiceError
from gradprobe.stats import LEAKY_SLOPE
from gradprobe.theory._gauss import Array, Func, expect, expect2

SELU_LAMBDA = 1.0507009873554805
SELU_ALPHA = 1.6732632423543772
_erf = np.frompyfunc(math.erf, 1, 1)


@dataclass(frozen=True)
class Activation:
    """An activation phi with its derivative, and optional piecewise-linear slopes.

    ``slopes = (s_neg, s_pos)`` marks phi(u) = s_neg*u for u < 0 and s_pos*u for u > 0; the moments
    then have closed forms. Otherwise they are trapezoid-rule Gaussian expectations.

    Example:
        >>> relu = get_activation("relu")
        >>> relu.second_moment(4.0), relu.gain(4.0)
        (2.0, 0.5)
    """

    name: str
    phi: Func
    dphi: Func
    slopes: tuple[float, float] | None = None

    def second_moment(self, q: float) -> float:
        """E[phi(sqrt(q) z)^2], the post-activation second moment a."""
        if self.slopes:
            return q * (self.slopes[0] ** 2 + self.slopes[1] ** 2) / 2
        return expect(lambda u: self.phi(u) ** 2, q)

    def gain(self, q: float) -> float:
        """E[phi'(sqrt(q) z)^2] (mu_1): the backward gain per unit of sigma_w^2."""
        if self.slopes:
            return (self.slopes[0] ** 2 + self.slopes[1] ** 2) / 2
        return expect(lambda u: self.dphi(u) ** 2, q)

    def gain4(self, q: float) -> float:
        """E[phi'(sqrt(q) z)^4] (mu_2), for the Jacobian spectrum (dynamical isometry)."""
        if self.slopes:
            return (self.slopes[0] ** 4 + self.slopes[1] ** 4) / 2
        return expect(lambda u: self.dphi(u) ** 4, q)

    def coupling_moments(self, q: float) -> tuple[float, float, float]:
        """E[phi'^2 phi^2], E[h phi' phi] and E[h^2 phi'^2] at h ~ N(0, q) (readout coupling)."""
        if self.slopes:
            lo, hi = self.slopes
            return q * (lo**4 + hi**4) / 2, q * (lo**2 + hi**2) / 2, q * (lo**2 + hi**2) / 2
        return (
            expect(lambda u: (self.dphi(u) * self.phi(u)) ** 2, q),
            expect(lambda u: u * self.dphi(u) * self.phi(u), q),
            expect(lambda u: (u * self.dphi(u)) ** 2, q),
        )

    def cross_moment(self, q_a: float, q_b: float, c: float) -> float:
        """E[phi(u_a) phi(u_b)] for u_a, u_b ~ N(0, q_a), N(0, q_b) with correlation c."""
        if self.slopes:
            lo, d = self.slopes[0], self.slopes[1] - self.slopes[0]
            k = (np.sqrt(1 - c * c) + (np.pi - np.arccos(c)) * c) / (2 * np.pi)
            return float(np.sqrt(q_a * q_b) * (lo * lo * c + lo * d * c + d * d * k))
        return expect2(self.phi, self.phi, q_a, q_b, c)

    def cross_gain(self, q_a: float, q_b: float, c: float) -> float:
        """E[phi'(u_a) phi'(u_b)] for the same correlated pair."""
        if self.slopes:
            lo, d = self.slopes[0], self.slopes[1] - self.slopes[0]
            return float(lo * lo + lo * d + d * d * (np.pi - np.arccos(c)) / (2 * np.pi))
        return expect2(self.dphi, self.dphi, q_a, q_b, c)


def _sigmoid(u: Array) -> Array:
    return 0.5 * (1.0 + np.tanh(u / 2))


def _dsigmoid(u: Array) -> Array:
    s = _sigmoid(u)
    return s * (1 - s)


def _dtanh(u: Array) -> Array:
    return 1 - np.tanh(u) ** 2


def _elu(u: Array, alpha: float = 1.0, scale: float = 1.0) -> Array:
    return scale * np.where(u > 0, u, alpha * np.expm1(np.minimum(u, 0)))


def _delu(u: Array, alpha: float = 1.0, scale: float = 1.0) -> Array:
    neg = alpha * np.exp(np.minimum(u, 0))
    return scale * np.where(u > 0, 1.0, np.where(u < 0, neg, (1 + alpha) / 2))


def _norm_cdf(u: Array) -> Array:
    return 0.5 * (1 + _erf(np.asarray(u) / np.sqrt(2)).astype(float))


def _gelu(u: Array) -> Array:
    return u * _norm_cdf(u)


def _dgelu(u: Array) -> Array:
    return _norm_cdf(u) + u * np.exp(-(u**2) / 2) / np.sqrt(2 * np.pi)


def _silu(u: Array) -> Array:
    return u * _sigmoid(u)


def _dsilu(u: Array) -> Array:
    s = _sigmoid(u)
    return s * (1 + u * (1 - s))


def _piecewise(name: str, lo: float, hi: float) -> Activation:
    def phi(u: Array) -> Array:
        return np.where(u > 0, hi * u, lo * u)

    def dphi(u: Array) -> Array:
        return np.where(u > 0, hi, np.where(u < 0, lo, (lo + hi) / 2)) + 0 * u

    return Activation(name, phi, dphi, slopes=(lo, hi))


ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": Activation("sigmoid", _sigmoid, _dsigmoid),
    "tanh": Activation("tanh", np.tanh, _dtanh),
    "relu": _piecewise("relu", 0.0, 1.0),
    "leaky_relu": _piecewise("leaky_relu", LEAKY_SLOPE, 1.0),
    "elu": Activation("elu", _elu, _delu),
    "selu": Activation(
        "selu",
        lambda u: _elu(u, SELU_ALPHA, SELU_LAMBDA),
        lambda u: _delu(u, SELU_ALPHA, SELU_LAMBDA),
    ),
    "gelu": Activation("gelu", _gelu, _dgelu),
    "silu": Activation("silu", _silu, _dsilu),
    "linear": _piecewise("linear", 1.0, 1.0),
}


def get_activation(name: str | Activation) -> Activation:
    """Look an activation up by name (case-insensitive; ``swish`` = silu, ``identity`` = linear).

    Example:
        >>> get_activation("Tanh").name
        'tanh'
    """
    if isinstance(name, Activation):
        return name
    key = str(name).lower().replace("-", "_")
    key = {"swish": "silu", "identity": "linear", "none": "linear", "leakyrelu": "leaky_relu"}.get(
        key, key
    )
    if key not in ACTIVATIONS:
        raise UnknownChoiceError("activation", name, ACTIVATIONS)
    return ACTIVATIONS[key]
