"""The layerwise mean-field recursion for an MLP of arbitrary widths (theory.md section 3.3).

Layer l = 1..L computes h^l = x^{l-1} W^l + b^l with W^l of size n_{l-1} x n_l, Var(W^l) = v_l and
Var(b^l) = s_l; hidden layers 1..L-1 apply phi_l, layer L is a linear readout::

    forward   q^l  = n_{l-1} v_l a^{l-1} + s_l              pre-activation second moment
              a^l  = E_z[phi_l(sqrt(q^l) z)^2]                post-activation second moment
    backward  chi_l = n_{l+1} v_{l+1} E_z[phi_l'(sqrt(q^l) z)^2]   gain of E[delta^2]: FAN-OUT x Var
              qt^l = chi_l qt^{l+1},   qt^L = 1               (per-unit E[delta^2], relative)
    outputs   E||delta^l||^2 = n_l qt^l,   E||dl/dW^l||_F^2 = n_{l-1} a^{l-1} n_l qt^l  (1 example)

a^0 is the inputs' second moment mean_i E[x_i^2]; the readout's a^L is reported as q^L.

Readout coupling (:func:`readout_excess`). Gradient independence misses that delta^L depends on
the readout's own weights. For one example and Gaussian weights, every layer splits exactly as
W^l = (h^l - b^l) x^T / ||x||^2 + W_perp, x = x^{l-1}, with W_perp independent of the forward
pass and of delta^l, so (W^l)^T delta^l = x s_l / ||x||^2 + W_perp^T delta^l with
s_l = (h^l - b^l) . delta^l.
The backward signal keeps a component along the forward activations, and backprop feeds it back
into s. With R_l = E||delta^l||^2, S_l = E[s_l^2] and mean-field sums over the n = n_{l-1} units
below (h ~ N(0, q^{l-1}), w = h - b of variance q_w = q - s_{l-1}, a = a^{l-1})::

    R_{l-1} = S_l E[phi'^2 phi^2] / (n a^2) + v_l R_l (n E[phi'^2] - E[phi'^2 phi^2] / a)
    S_{l-1} = S_l (c_1 / a)^2 + v_l R_l n (E[w^2 phi'^2] - c_1^2 / a),   c_1 = E[w phi' phi]

If delta^L were independent of W^L, S_L = q_u R_L (q_u = n_{L-1} v_L a^{L-1}) and the S-terms would
cancel the -E[phi'^2 phi^2]/a one at the top layer. The loss sets S_L = E[(u . delta^L)^2] instead
(:mod:`gradprobe.theory.readout`); the excess S_L - q_u R_L, propagated
down by the same linear map, adds to the independent E||delta^l||^2. It is O(1/n) per layer but
accumulates with depth: +26% in E||delta^1||^2 for the 10-layer width-64 ReLU/He net with
softmax over 10 classes (measured +28% over 1500 nets).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gradprobe.theory.activations import Activation


@dataclass(frozen=True)
class Recursion:
    """Per-layer moments, index i = layer l - 1 (``a`` holds a^0..a^L, one longer)."""

    q: tuple[float, ...]
    a: tuple[float, ...]
    chi: tuple[float, ...]
    qt: tuple[float, ...]

    def delta2(self, widths: Sequence[int]) -> list[float]:
        """E||delta^l||^2 = n_l qt^l, l = 1..L."""
        return [widths[i + 1] * t for i, t in enumerate(self.qt)]

    def grad2(self, widths: Sequence[int]) -> list[float]:
        """Per-example E||dl/dW^l||_F^2 = n_{l-1} a^{l-1} n_l qt^l, l = 1..L."""
        return [widths[i] * self.a[i] * widths[i + 1] * t for i, t in enumerate(self.qt)]


def forward(
    widths: Sequence[int],
    acts: Sequence[Activation],
    weight_vars: Sequence[float],
    bias_vars: Sequence[float],
    a0: float,
) -> tuple[list[float], list[float]]:
    """q^1..q^L and a^0..a^L (``acts`` has one entry per hidden layer, L - 1 in all)."""
    q: list[float] = []
    a = [float(a0)]
    for i, (v, s) in enumerate(zip(weight_vars, bias_vars, strict=True)):
        q.append(widths[i] * v * a[i] + s)
        a.append(acts[i].second_moment(q[i]) if i < len(acts) else q[i])
    return q, a


def backward(
    widths: Sequence[int],
    acts: Sequence[Activation],
    weight_vars: Sequence[float],
    q: Sequence[float],
) -> tuple[list[float], list[float]]:
    """chi_1..chi_{L-1} and qt^1..qt^L (qt^L = 1)."""
    chi = [widths[i + 2] * weight_vars[i + 1] * act.gain(q[i]) for i, act in enumerate(acts)]
    qt = [1.0]
    for c in reversed(chi):
        qt.insert(0, c * qt[0])
    return chi, qt


def run(
    widths: Sequence[int],
    acts: Sequence[Activation],
    weight_vars: Sequence[float],
    bias_vars: Sequence[float],
    a0: float = 1.0,
) -> Recursion:
    """The whole recursion: forward moments, then backward gains.

    Example (sigmoid, Glorot-uniform, 10 layers of width 64, 10 outputs; theory.md 9.2):
        >>> from gradprobe.theory.activations import get_activation
        >>> w = [64] * 10 + [10]
        >>> v = [2 / (w[i] + w[i + 1]) for i in range(10)]
        >>> r = run(w, [get_activation("sigmoid")] * 9, v, [0.0] * 10)
        >>> g = r.grad2(w)
        >>> f"{(g[0] / g[-1]) ** 0.5:.3g}"
        '5.19e-06'
    """
    q, a = forward(widths, acts, weight_vars, bias_vars, a0)
    chi, qt = backward(widths, acts, weight_vars, q)
    return Recursion(tuple(q), tuple(a), tuple(chi), tuple(qt))


def readout_excess(
    widths: Sequence[int],
    acts: Sequence[Activation],
    weight_vars: Sequence[float],
    bias_vars: Sequence[float],
    rec: Recursion,
    delta2: float,
    excess: float,
) -> list[float]:
    """Relative rise of E||delta^l||^2 from the readout coupling, l = 1..L (0 at the readout).

    ``delta2`` = E||delta^L||^2 and ``excess`` = E[(u . delta^L)^2] - q_u delta2 come from the
    loss; the excess state (dR, dS) starts at (0, excess) and follows the module's linear map.

    Example (ReLU/He, softmax over 10 classes: +26% at layer 1, +3% just below the readout):
        >>> from gradprobe.theory.activations import get_activation
        >>> from gradprobe.theory.readout import cross_entropy_moments
        >>> w, acts = [64] * 10 + [10], [get_activation("relu")] * 9
        >>> v, s = [2 / n for n in w[:-1]], [0.0] * 10
        >>> r = run(w, acts, v, s)
        >>> m = cross_entropy_moments(64 * v[-1] * r.a[9], 0.0, 10)
        >>> [round(x, 3) for x in readout_excess(w, acts, v, s, r, m.delta2, m.excess)[::3]]
        [0.257, 0.179, 0.094, 0.0]
    """
    n_layers = len(weight_vars)
    if delta2 <= 0:
        return [0.0] * n_layers
    d_r, d_s, r_ind = 0.0, float(excess), float(delta2)
    out = [0.0]
    for i in range(n_layers - 1, 0, -1):  # weight layer l = i + 1 over hidden layer i
        act, n, v = acts[i - 1], widths[i], weight_vars[i]
        q, s_b, a = rec.q[i - 1], bias_vars[i - 1], rec.a[i]
        mu = act.gain(q)
        if a <= 0 or q <= 0:
            d_r, d_s = v * n * mu * d_r, 0.0
        else:
            e_dp, e_hdp, e_hhdd = act.coupling_moments(q)
            r_w = max(q - s_b, 0.0) / q  # E[w | h] = r_w h
            c1 = r_w * e_hdp
            e_w2 = r_w * s_b * mu + r_w * r_w * e_hhdd
            d_r, d_s = (
                d_s * e_dp / (n * a * a) + v * d_r * (n * mu - e_dp / a),
                d_s * (c1 / a) ** 2 + v * d_r * n * (e_w2 - c1 * c1 / a),
            )
        r_ind *= v * n * mu
        out.insert(0, d_r / r_ind if r_ind > 0 else 0.0)
    return out
