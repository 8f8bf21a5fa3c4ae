"""The layerwise mean-field recursion for an MLP of arbitrary widths (theory.md section 3.3).

Layer l = 1..L computes h^l = x^{l-1} W^l + b^l with W^l of size n_{l-1} x n_l, Var(W^l) = v_l and
Var(b^l) = s_l; hidden layers 1..L-1 apply phi_l, layer L is a linear readout::

    forward   q^l  = n_{l-1} v_l a^{l-1} + s_l              pre-activation second moment
              a^l  = E_z[phi_l(sqrt(q^l) z)^2]                post-activation second moment
    backward  chi_l = n_{l+1} v_{l+1} E_z[phi_l'(sqrt(q^l) z)^2]   gain of E[delta^2]: FAN-OUT x Var
              qt^l = chi_l qt^{l+1},   qt^L = 1               (per-unit E[delta^2], relative)
    outputs   E||delta^l||^2 = n_l qt^l,   E||dl/dW^l||_F^2 = n_{l-1} a^{l-1} n_l qt^l  (1 example)

a^0 is the inputs' second moment mean_i E[x_i^2]; the readout's a^L is reported as q^L.
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
