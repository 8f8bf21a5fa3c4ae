"""The typical net: how far one net's first/readout ratio sits from the ensemble prediction.

Mean field predicts ensemble averages, E||grad W^1||^2 / E||grad W^L||^2 over random nets. One
net's ratio r = sqrt(N / D), with N and D its batch-mean squared per-example norms of the first
layer and the readout, varies from net to net; for small log-normal spreads the geometric mean
over nets is the ensemble value times exp(-(Var ln N - Var ln D) / 4). Both variances are O(L/n)
and come from the units of each hidden layer (n of them, drawn independently given the layer
below), averaged over pairs of examples whose pre-activations have the two-point correlation c
(:mod:`gradprobe.theory.batch`)::

    forward   Var xi_l  = (1/n) mean_{b,b'} (E[phi_b^2 phi_b'^2] / a^2 - 1)
    backward  Var eta_l = (1/n) mean_{b,b'} (E[phi'_b^2 phi'_b'^2] / mu^2
                                             (1 + 2 rho_bb'^2 + (kappa - 3) tau_bb') - 1)
    shared    Cov(xi_l, eta_l) = (1/n) mean_{b,b'} (E[phi_b^2 phi'_b'^2] / (a mu) - 1)

rho_bb'^2 is the squared cosine of two examples' backward signals at the layer above (from the
readout: 1/(K-1) for softmax with random labels; each layer multiplies it by
(E[phi'_b phi'_b'] / mu)^2 and adds (E[phi'_b^2 phi'_b'^2] / (n mu^2)) (1 + rho^2)), tau the
fourth-moment overlap of the signals and kappa the weights' kurtosis (1.8 uniform, 3 normal). The
forward noise propagates through the length map as in :mod:`gradprobe.theory.spread`, and the
backward gains respond to it through d ln mu / d ln q; the loss's E||delta^L||^2 responds to the
logit scale. Left out: a weight matrix used both forward and backward (gradient independence), the
spread of the correlation c itself, and the net-to-net spread of the readout coupling's excess --
for ReLU/He with a softmax that last one is half of Var ln N (predicted 0.12, measured 0.24).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from gradprobe.theory._gauss import expect
from gradprobe.theory.activations import Activation
from gradprobe.theory.readout import ReadoutMoments
from gradprobe.theory.recursion import Recursion
from gradprobe.theory.spread import _dlog


def weight_kurtosis(init: str | None) -> float:
    """E[w^4] / E[w^2]^2 of the init's weights: 1.8 for uniform schemes, 3 otherwise.

    Example:
        >>> weight_kurtosis("glorot_uniform"), weight_kurtosis("he_normal")
        (1.8, 3.0)
    """
    return 1.8 if init and (init.endswith("uniform") or init == "torch_default") else 3.0


_Z = np.linspace(-8.0, 8.0, 160)
_W = np.exp(-(_Z**2) / 2)
_W /= _W.sum()


def _cross(
    f: Callable[[np.ndarray], np.ndarray], g: Callable[[np.ndarray], np.ndarray], q: float, c: float
) -> float:
    """E[f(u_a) g(u_b)], u ~ N(0, q) with correlation c: a 160 x 160 trapezoid rule (the
    variances here need ~1e-4, not the 1e-10 of :func:`gradprobe.theory._gauss.expect2`)."""
    c = min(max(c, -1.0), 1.0)
    root = math.sqrt(max(q, 0.0))
    u_b = root * (c * _Z[:, None] + math.sqrt(1 - c * c) * _Z[None, :])
    return float(np.dot(f(root * _Z) * (g(u_b) @ _W), _W))


def _squared(f: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    def g(u: np.ndarray) -> np.ndarray:
        return f(u) ** 2

    return g


def typical_offset(
    widths: Sequence[int],
    acts: Sequence[Activation],
    weight_vars: Sequence[float],
    bias_vars: Sequence[float],
    rec: Recursion,
    readout: tuple[Callable[[float], ReadoutMoments], float, float, float],
    kurtosis: float,
    batch_size: int | None = None,
) -> float:
    """Geometric mean over nets / ensemble value of the first/readout ratio (module doc).

    ``readout`` = (moments at a logit-scale factor, rho^2, tau_d, tau_o) of the readout's delta
    for two examples; ``batch_size`` None means a large batch.

    Example (ReLU/Glorot, 10 layers of width 64, softmax over 10 classes; measured 1.068):
        >>> from gradprobe.theory.activations import get_activation
        >>> from gradprobe.theory.readout import readout_moments
        >>> from gradprobe.theory.recursion import run
        >>> w, acts = [64] * 10 + [10], [get_activation("relu")] * 9
        >>> v, s = [2 / (a + b) for a, b in zip(w, w[1:])], [0.0] * 10
        >>> r = run(w, acts, v, s)
        >>> def m(scale): return readout_moments("ce", 64 * v[-1] * r.a[9] * scale, 0.0, 10)
        >>> round(typical_offset(w, acts, v, s, r, (m, 1 / 9, 0.81, 0.1), 1.8, 64), 3)
        1.066
    """
    moments, rho2_top, tau_d_top, tau_o_top = readout
    hidden = len(acts)
    inv_b = 1.0 / batch_size if batch_size else 0.0
    q_ab = [bias_vars[0]]  # independent standardised inputs: a^0_ab = 0
    for i, act in enumerate(acts[:-1]):
        q = rec.q[i]
        c = q_ab[i] / q if q > 0 else 1.0
        a_ab = act.cross_moment(q, q, c) if act.slopes else _cross(act.phi, act.phi, q, c)
        q_ab.append(widths[i + 1] * weight_vars[i + 1] * a_ab + bias_vars[i + 1])
    rho2, tau_d, tau_o = [0.0] * (hidden + 2), [0.0] * (hidden + 2), [0.0] * (hidden + 2)
    rho2[hidden + 1], tau_d[hidden + 1], tau_o[hidden + 1] = rho2_top, tau_d_top, tau_o_top
    stats: dict[int, tuple[float, float, float, float] | None] = {}
    for layer in range(hidden, 0, -1):
        act, n, q = acts[layer - 1], widths[layer], rec.q[layer - 1]
        c = q_ab[layer - 1] / q if q > 0 else 1.0
        mu, e4 = act.gain(q), act.gain4(q)
        if q <= 0 or mu <= 0:
            stats[layer] = None
            rho2[layer] = rho2[layer + 1]
            continue
        m_cross = _cross(_squared(act.dphi), _squared(act.dphi), q, c)
        m1 = act.cross_gain(q, q, c) if act.slopes else _cross(act.dphi, act.dphi, q, c)
        rho2[layer] = rho2[layer + 1] * (m1 / mu) ** 2 + m_cross / (n * mu * mu) * (
            1 + rho2[layer + 1]
        )
        tau_d[layer], tau_o[layer] = 3 * e4 / (mu * mu * n), m_cross / (mu * mu * n)
        stats[layer] = (c, mu, e4, m_cross)

    nu_f, nu_b, cov_fb, gain, back = [0.0], [0.0], [0.0], [1.0], [0.0]
    for layer in range(1, hidden + 1):
        act, n, q, a = acts[layer - 1], widths[layer], rec.q[layer - 1], rec.a[layer]
        st = stats[layer]
        if st is None or a <= 0:
            for lst in (nu_f, nu_b, cov_fb, gain, back):
                lst.append(0.0)
            continue
        c, mu, e4, m_cross = st
        phi2, dphi2 = _squared(act.phi), _squared(act.dphi)
        f4 = expect(_squared(phi2), q)
        f_cross = _cross(phi2, phi2, q, c)
        nu_f.append((inv_b * (f4 / a**2 - 1) + (1 - inv_b) * (f_cross / a**2 - 1)) / n)
        k3 = kurtosis - 3
        diag = e4 / mu**2 * (3 + k3 * tau_d[layer + 1]) - 1
        off = m_cross / mu**2 * (1 + 2 * rho2[layer + 1] + k3 * tau_o[layer + 1]) - 1
        nu_b.append((inv_b * diag + (1 - inv_b) * off) / n)
        fb = act.coupling_moments(q)[0]
        fb_cross = _cross(phi2, dphi2, q, c)
        cov_fb.append((inv_b * (fb / (a * mu) - 1) + (1 - inv_b) * (fb_cross / (a * mu) - 1)) / n)
        r = max(q - bias_vars[layer - 1], 0.0) / q
        gain.append(_dlog(act.second_moment, q) * r)
        back.append(_dlog(act.gain, q) * r)

    s_f = _dlog(lambda x: moments(x).delta2, 1.0)

    def prod(k: int, m: int) -> float:
        return math.prod(gain[k + 1 : m + 1])

    var_n = var_d = 0.0
    for k in range(1, hidden + 1):
        a_n = sum(back[m] * prod(k, m - 1) for m in range(k + 1, hidden + 1))
        a_n += s_f * prod(k, hidden)
        a_d = (1 + s_f) * prod(k, hidden)
        var_n += a_n * a_n * nu_f[k] + nu_b[k] + 2 * a_n * cov_fb[k]
        var_d += a_d * a_d * nu_f[k]
    return math.exp(-(var_n - var_d) / 4)
