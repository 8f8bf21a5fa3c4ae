"""The loss at the readout: the two moments of delta^L that couple it to the readout's weights.

Gradient independence treats the readout W^L as independent of delta^L = dl/dh^L, but delta^L is a
function of the logits h^L = u + b, u = W^L x. For one example the exact split (Gaussian weights)
W^L = u x^T / ||x||^2 + W_perp, with W_perp independent of u and of everything forward, gives::

    (W^L)^T delta = x (u . delta) / ||x||^2 + W_perp^T delta

so the backward signal carries a component along the forward activation x^{L-1}. Its size is set by
two moments of the loss over u ~ N(0, q_u I_K), b ~ N(0, s I_K) and random targets:

    delta2   = E||delta^L||^2
    overlap2 = E[(u . delta^L)^2]      (q_u delta2 if delta^L were independent of u)

Losses (K outputs, targets independent of the inputs):

* ``cross_entropy``: softmax over K >= 2 logits, labels uniform over the classes; delta = p - e_y.
* ``binary_cross_entropy``: one logit, sigmoid, labels 0/1 with probability 1/2; delta = p - y.
* ``mse``: linear readout, targets with second moment ``target_second_moment``; delta = h - y
  (delta2 = K (q_u + s + t2), overlap2 = K (K + 2) q_u^2 + K q_u (s + t2)).

The excess overlap2 - q_u delta2 is what the coupling carries down the net
(:func:`gradprobe.theory.recursion.readout_excess`). Both moments also depend on the logit scale,
which spreads from net to net and example to example (:mod:`gradprobe.theory.spread`); for one
output that spread matters as much as the coupling and pulls the other way. The coupling is taken
to first order: squared error on many outputs is beyond it (10 outputs of a ReLU/He net: excess
seven times q_u delta2, first/readout ratio predicted 1.38, measured 1.57, independence 1.00).

The softmax moments are K-dimensional Gaussian integrals, reduced to 1-D ones without sampling:
with 1/A^m = (1/Gamma(m)) int t^{m-1} e^{-tA} dt and A = sum_k e^{z_k}, the logits factorise, e.g.
E[p_1^2] = int t E[e^{2 z} e^{-t e^z}] phi(t)^{K-1} dt with phi(t) = E[exp(-t e^z)]. Both the
integral over z and the one over log t are trapezoid rules on smooth integrands (relative error
below 1e-9 against a 10x finer grid; Monte Carlo agrees to its own noise), a few ms for any K.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from gradprobe.errors import UnknownChoiceError, UsageError
from gradprobe.theory._gauss import expect

LOSSES = ("cross_entropy", "binary_cross_entropy", "mse")
_ALIASES = {
    "ce": "cross_entropy",
    "softmax": "cross_entropy",
    "softmax_cross_entropy": "cross_entropy",
    "bce": "binary_cross_entropy",
    "binary": "binary_cross_entropy",
    "squared_error": "mse",
    "mean_squared_error": "mse",
}
SIGMA_MAX = 100.0  # beyond this logit std the softmax is one-hot; moments are scaled from here
_Z_MAX = 8.0


@dataclass(frozen=True)
class ReadoutMoments:
    """E||delta^L||^2 and E[(u . delta^L)^2] for one example (u = W^L x, the logits less b)."""

    delta2: float
    overlap2: float
    independent_overlap2: float

    @property
    def excess(self) -> float:
        """overlap2 - q_u delta2: what the coupling adds to the aligned component."""
        return self.overlap2 - self.independent_overlap2


def canonical_loss(name: str) -> str:
    """The canonical loss name (``ce``, ``bce``, ``softmax``... are accepted aliases).

    Example:
        >>> canonical_loss("CE"), canonical_loss("bce")
        ('cross_entropy', 'binary_cross_entropy')
    """
    key = str(name).lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in LOSSES:
        raise UnknownChoiceError("loss", name, LOSSES)
    return key


def check_loss(loss: str, outputs: int) -> str:
    """The canonical name of ``loss``, checked against the number of outputs."""
    loss = canonical_loss(loss)
    if loss == "cross_entropy" and outputs < 2:
        raise UsageError(
            "loss 'cross_entropy' (softmax) needs >= 2 outputs, got 1: give "
            "loss='binary_cross_entropy' or 'mse'"
        )
    if loss == "binary_cross_entropy" and outputs != 1:
        raise UsageError(
            f"loss 'binary_cross_entropy' needs 1 output, got {outputs}: give "
            "loss='cross_entropy' or 'mse'"
        )
    return loss


def default_loss(outputs: int) -> str:
    """Softmax cross-entropy for two or more outputs, squared error for one."""
    return "cross_entropy" if outputs > 1 else "mse"


def _z_grid(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Trapezoid nodes and Gaussian-weighted weights for z ~ N(0, 1), fine enough that sigma*z
    moves by at most 1 between nodes."""
    dz = min(0.2, 1.0 / max(sigma, 1e-12))
    n_z = 2 * int(math.ceil(_Z_MAX / dz))
    z = np.linspace(-_Z_MAX, _Z_MAX, n_z)
    w = np.full(n_z, z[1] - z[0])
    w[[0, -1]] *= 0.5
    w *= np.exp(-(z**2) / 2) / math.sqrt(2 * math.pi)
    return z, w


@lru_cache(maxsize=64)
def _softmax_moments(sigma: float, k: int) -> tuple[float, float]:
    """E||p||^2 and E[(z . p)^2] for p = softmax(z), z ~ N(0, sigma^2 I_k)."""
    if sigma > SIGMA_MAX:  # one-hot: ||p||^2 -> 1 and (z . p)^2 = max_k z_k^2 grows as sigma^2
        pp, zp2 = _softmax_moments(SIGMA_MAX, k)
        return pp, zp2 * (sigma / SIGMA_MAX) ** 2
    z, w = _z_grid(sigma)
    d_tau = 0.5
    tau = np.arange(-sigma * _Z_MAX - 40.0, sigma * _Z_MAX + 5.0, d_tau)
    x = tau[:, None] + sigma * z[None, :]  # log(t e^z)
    ex = np.exp(np.minimum(x, 700.0))
    e1, e2 = np.exp(x - ex), np.exp(2 * x - ex)  # (t e^z)^m exp(-t e^z), m = 1, 2
    logit = sigma * z
    with np.errstate(divide="ignore"):
        log_phi = np.log(np.exp(-ex) @ w)
    rest1 = np.exp((k - 1) * log_phi)
    rest2 = np.exp((k - 2) * log_phi)
    pp = k * float(np.sum((e2 @ w) * rest1)) * d_tau
    zp2 = k * float(np.sum((e2 @ (w * logit**2)) * rest1)) * d_tau
    zp2 += k * (k - 1) * float(np.sum((e1 @ (w * logit)) ** 2 * rest2)) * d_tau
    return pp, zp2


@lru_cache(maxsize=64)
def softmax_powers(sigma: float, k: int) -> tuple[float, float, float, float]:
    """E[p_1^m], m = 1..4, for p = softmax(z), z ~ N(0, sigma^2 I_k) (the same 1-D reduction:
    E[p_1^m] = int t^{m-1} E[e^{mz} e^{-t e^z}] phi(t)^{k-1} dt / (m-1)!).

    Example:
        >>> [round(x, 6) for x in softmax_powers(0.0, 4)]
        [0.25, 0.0625, 0.015625, 0.003906]
    """
    sigma = min(sigma, SIGMA_MAX)
    z, w = _z_grid(sigma)
    d_tau = 0.5
    tau = np.arange(-sigma * _Z_MAX - 40.0, sigma * _Z_MAX + 5.0 + 2 * math.log(k + 1), d_tau)
    x = tau[:, None] + sigma * z[None, :]
    ex = np.exp(np.minimum(x, 700.0))
    with np.errstate(divide="ignore"):
        rest = np.exp((k - 1) * np.log(np.exp(-ex) @ w))
    return tuple(  # type: ignore[return-value]
        float(np.sum((np.exp(m * x - ex) @ w) * rest)) * d_tau / math.factorial(m - 1)
        for m in (1, 2, 3, 4)
    )


def signal_overlaps(
    loss: str, q_u: float, bias_var: float, outputs: int, target_second_moment: float = 1.0
) -> tuple[float, float, float]:
    """(rho^2, tau_d, tau_o) of the readout's delta for two examples with independent targets.

    rho^2 = E[(delta_b . delta_b')^2] / E||delta||^2^2, tau_d = E[sum delta_i^4] / E||delta||^2^2,
    tau_o = E[sum delta_bi^2 delta_b'i^2] / E||delta||^2^2; the two examples' logits are taken as
    independent (their correlation is left out). Softmax: sum_i delta_i = 0 gives rho^2 = 1/(K-1)
    and tau_o = 1/K exactly.

    Example:
        >>> [round(x, 4) for x in signal_overlaps("cross_entropy", 0.0, 0.0, 10)]
        [0.1111, 0.8111, 0.1]
    """
    loss = check_loss(loss, outputs)
    k = int(outputs)
    var = max(q_u, 0.0) + max(bias_var, 0.0)
    if loss == "mse":
        return 1.0 / k, 3.0 / k, 1.0 / k
    if loss == "binary_cross_entropy":
        d2 = expect(lambda z: _sigmoid(z) ** 2 - _sigmoid(z), var) + 0.5
        d4 = expect(lambda z: 0.5 * _sigmoid(z) ** 4 + 0.5 * (1 - _sigmoid(z)) ** 4, var)
        return 1.0, d4 / d2**2, 1.0
    p1, p2, p3, p4 = softmax_powers(math.sqrt(var), k)
    delta2 = k * p2 - 2.0 / k + 1.0
    one_minus4 = 1 - 4 * p1 + 6 * p2 - 4 * p3 + p4
    return 1.0 / (k - 1), (one_minus4 + (k - 1) * p4) / delta2**2, 1.0 / k


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(z / 2))


def _binary(q_u: float, s: float) -> tuple[float, float]:
    var = q_u + s
    if var <= 0:
        return 0.25, 0.0
    lam = q_u / var

    def u2(z: np.ndarray) -> np.ndarray:  # E[u^2 | z]
        return q_u * (1 - lam) + lam * lam * z * z

    # (p - y)^2 averaged over y in {0, 1}: p^2 - p + 1/2
    delta2 = expect(lambda z: _sigmoid(z) ** 2 - _sigmoid(z), var) + 0.5
    overlap2 = expect(lambda z: u2(z) * (_sigmoid(z) ** 2 - _sigmoid(z)), var) + 0.5 * q_u
    return delta2, overlap2


def readout_moments(
    loss: str, q_u: float, bias_var: float, outputs: int, target_second_moment: float = 1.0
) -> ReadoutMoments:
    """delta2 = E||delta^L||^2 and overlap2 = E[(u . delta^L)^2] for logits u + b (module doc).

    ``q_u`` is the per-logit variance of u = W^L x (n_{L-1} v_L a^{L-1}), ``bias_var`` Var(b^L).

    Example (one output, squared error with unit targets: delta2 = q_u + 1, overlap2 = 3 q_u^2 +
    q_u):
        >>> m = readout_moments("mse", 2.0, 0.0, 1)
        >>> m.delta2, m.overlap2, m.excess
        (3.0, 14.0, 8.0)
    """
    loss = check_loss(loss, outputs)
    if loss == "cross_entropy":
        return cross_entropy_moments(q_u, bias_var, outputs)
    q_u, s, k = max(float(q_u), 0.0), max(float(bias_var), 0.0), int(outputs)
    if loss == "binary_cross_entropy":
        delta2, overlap2 = _binary(q_u, s)
    else:
        t2 = float(target_second_moment)
        delta2 = k * (q_u + s + t2)
        overlap2 = k * (k + 2) * q_u * q_u + k * q_u * (s + t2)
    return ReadoutMoments(delta2, overlap2, q_u * delta2)


def cross_entropy_moments(q_u: float, bias_var: float, outputs: int) -> ReadoutMoments:
    """delta2 and overlap2 of softmax cross-entropy with uniform labels (module doc).

    ``q_u`` is the per-logit variance of u = W^L x (n_{L-1} v_L a^{L-1}), ``bias_var`` Var(b^L),
    ``outputs`` the number of classes K >= 2.

    Example (ReLU/He, 10 classes: the overlap is twice what independence would give):
        >>> m = cross_entropy_moments(2.0, 0.0, 10)
        >>> f"{m.delta2:.3f} {m.overlap2 / m.independent_overlap2:.3f}"
        '1.076 2.033'
    """
    q_u, s, k = max(float(q_u), 0.0), max(float(bias_var), 0.0), int(outputs)
    check_loss("cross_entropy", k)
    var = q_u + s
    if var <= 0:
        return ReadoutMoments(1.0 - 1.0 / k, 0.0, 0.0)
    lam = q_u / var  # E[u | z] = lam z; Var[u | z] = q_u (1 - lam)
    pp, zp2 = _softmax_moments(math.sqrt(var), k)
    delta2 = pp - 2.0 / k + 1.0
    # E[(u.p - u_y)^2] = E(u.p)^2 - (2/K) E[(u.p) sum u] + q_u, and E[(z.p) sum z] = var (Stein)
    overlap2 = lam * lam * zp2 + q_u * (1 - lam) * pp - 2.0 * q_u / k + q_u
    return ReadoutMoments(delta2, overlap2, q_u * delta2)
