"""Fixed-point quantities of an infinitely deep net with one (sigma_w^2, sigma_b^2): q*, chi_1, xi.

Length map (Poole et al. 2016):   q^l = sigma_w^2 E_z[phi(sqrt(q^{l-1}) z)^2] + sigma_b^2
Fixed point:                       q*  = sigma_w^2 E_z[phi(sqrt(q*) z)^2] + sigma_b^2
Backward gain at the fixed point:  chi_1 = sigma_w^2 E_z[phi'(sqrt(q*) z)^2]
Gradient depth scale:              xi = -1 / ln chi_1   (reported as 1/|ln chi_1|; inf at chi_1 = 1)
Trainable depth (Schoenholz 2017): about 6 xi
Jacobian spectrum (Pennington 2017): mu2/mu1^2 = E[phi'^4] / E[phi'^2]^2 at q*, and the variance of
the squared singular values of the input-output Jacobian at criticality L (mu2/mu1^2 - 1 - s1),
s1 = -1 for Gaussian and 0 for orthogonal weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from gradprobe.theory.activations import Activation, get_activation

Q_MAX = 1e12
TRAINABLE_DEPTH_FACTOR = 6.0


def _length_map(act: Activation, sigma_w2: float, sigma_b2: float, q: float) -> float:
    return sigma_w2 * act.second_moment(q) + sigma_b2


def _bisect_log(g: Callable[[float], float], lo: float, hi: float, steps: int = 200) -> float:
    """Root of g between lo and hi (sign change), bisected in log space."""
    g_lo = g(lo)
    for _ in range(steps):
        mid = math.sqrt(lo * hi)
        if (g(mid) > 0) == (g_lo > 0):
            lo, g_lo = mid, g(mid)
        else:
            hi = mid
        if hi / lo - 1 < 1e-13:
            break
    return math.sqrt(lo * hi)


def fixed_point(
    activation: str | Activation, sigma_w2: float, sigma_b2: float = 0.0, q0: float = 1.0
) -> float:
    """The fixed point q* that the length map reaches from q0 (0 or inf when it has none).

    The stable fixed point reached from q0 is the nearest root of F(q) - q in the direction the
    map moves; it is bracketed on a log grid and bisected, so slow algebraic approaches (tanh at
    sigma_w^2 = 1: q^l ~ 1/(2l)) still give q* = 0 exactly.

    Example:
        >>> round(fixed_point("sigmoid", 1.0), 3)
        0.265
        >>> fixed_point("tanh", 1.0), fixed_point("relu", 2.0, q0=3.0)
        (0.0, 3.0)
    """
    act = get_activation(activation)
    q0 = max(float(q0), 1e-300)

    def g(q: float) -> float:
        return _length_map(act, sigma_w2, sigma_b2, q) - q

    g0 = g(q0)
    if abs(g0) <= 1e-12 * max(q0, 1.0):
        return q0
    direction = -1.0 if g0 < 0 else 1.0
    grid = q0 * np.logspace(0.0, direction * 40.0, 401)
    for prev, q in zip(grid[:-1], grid[1:], strict=True):
        if q > Q_MAX:
            return math.inf
        if (g(q) > 0) != (g0 > 0):
            return _bisect_log(g, min(prev, q), max(prev, q))
    return 0.0 if direction < 0 else math.inf


def chi1(
    activation: str | Activation, sigma_w2: float, sigma_b2: float = 0.0, q0: float = 1.0
) -> float:
    """chi_1 = sigma_w^2 E[phi'(sqrt(q*) z)^2]: < 1 ordered (vanishing), > 1 chaotic (exploding).

    At q* = inf (a net whose signal grows without bound) the limit is taken at q = 1e12.

    Example:
        >>> round(chi1("sigmoid", 1.0), 4), chi1("relu", 2.0), round(chi1("tanh", 1.0), 9)
        (0.0557, 1.0, 1.0)
    """
    act = get_activation(activation)
    q_star = fixed_point(act, sigma_w2, sigma_b2, q0)
    return sigma_w2 * act.gain(min(q_star, Q_MAX))


def depth_scale(chi_1: float) -> float:
    """xi = 1/|ln chi_1| in layers: gradients change by a factor e every xi layers (inf at 1).

    Example:
        >>> round(depth_scale(0.0557), 3), depth_scale(1.0)
        (0.346, inf)
    """
    if chi_1 <= 0:
        return 0.0
    rate = abs(math.log(chi_1))
    return math.inf if rate < 1e-12 else 1.0 / rate


def isometry_ratio(activation: str | Activation, q_star: float) -> float:
    """mu2/mu1^2 = E[phi'^4] / E[phi'^2]^2 at q*: 1 allows dynamical isometry, ReLU gives 2.

    Example:
        >>> isometry_ratio("relu", 1.0), round(isometry_ratio("tanh", 0.0), 6)
        (2.0, 1.0)
    """
    act = get_activation(activation)
    q = min(q_star, Q_MAX)
    mu1 = act.gain(q)
    return act.gain4(q) / (mu1 * mu1) if mu1 > 0 else math.inf


def jacobian_spectrum_var(ratio: float, n_layers: int, orthogonal: bool = False) -> float:
    """Variance of the squared singular values of J at criticality: L (mu2/mu1^2 - 1 - s1).

    Example:
        >>> jacobian_spectrum_var(2.0, 10), jacobian_spectrum_var(2.0, 10, orthogonal=True)
        (20.0, 10.0)
    """
    s1 = 0.0 if orthogonal else -1.0
    return n_layers * (ratio - 1.0 - s1)
