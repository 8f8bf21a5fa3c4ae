"""Two-point (kernel) mean field for batch-mean gradients (theory.md section 3.3).

For a batch-mean loss over B examples the weight gradient adds a cross-example term::

    E||G_l||^2 = n_{l-1} n_l [ (1/B) qt^l_aa a^{l-1}_aa + (1 - 1/B) qt^l_ab a^{l-1}_ab ]
    q^l_ab     = n_{l-1} v_l a^{l-1}_ab + s_l,     c^l = q^l_ab / q^l_aa
    a^l_ab     = E[phi(u_a) phi(u_b)]              (the C-map; arc-cosine kernel for ReLU)
    qt^l_ab    = n_{l+1} v_{l+1} E[phi'(u_a) phi'(u_b)] qt^{l+1}_ab

At the output, softmax cross-entropy with random labels gives qt^L_aa = (E||p||^2 + 1 - 2/K)/K and
qt^L_ab = (E[p_a . p_b] - 1/K)/K; squared error with zero-mean targets independent of the inputs
gives qt^L_aa = q^L_aa + E[t^2] and qt^L_ab = q^L_ab; binary cross-entropy (one sigmoid output,
0/1 labels of probability 1/2) gives qt^L_aa = E[p^2] and qt^L_ab = E[p_a p_b] - 1/4. The softmax
moments are a fixed-seed Monte-Carlo average over correlated Gaussian logits. The prediction holds
for sigmoid and ReLU; for tanh at large B it misses (the softmax's dependence on the logits breaks
gradient independence, theory.md 9.3).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gradprobe.errors import UnknownChoiceError
from gradprobe.theory._gauss import expect, expect2
from gradprobe.theory.activations import Activation
from gradprobe.theory.recursion import Recursion

LOSSES = ("cross_entropy", "binary_cross_entropy", "mse")
_MC_SAMPLES = 200_000


def _softmax_moments(q_aa: float, q_ab: float, k: int) -> tuple[float, float]:
    """E||p_a||^2 and E[p_a . p_b] for logits with per-unit variance q_aa, covariance q_ab."""
    rng = np.random.default_rng(0)
    c = 0.0 if q_aa <= 0 else float(np.clip(q_ab / q_aa, -1.0, 1.0))
    z1 = rng.standard_normal((_MC_SAMPLES, k))
    z2 = c * z1 + np.sqrt(1 - c * c) * rng.standard_normal((_MC_SAMPLES, k))

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(np.sqrt(max(q_aa, 0.0)) * z - np.sqrt(max(q_aa, 0.0)) * z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    p_a, p_b = softmax(z1), softmax(z2)
    return float((p_a * p_a).sum(1).mean()), float((p_a * p_b).sum(1).mean())


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(z / 2))


def _output_terms(
    loss: str, q_aa: float, q_ab: float, k: int, target_second_moment: float
) -> tuple[float, float]:
    """(qt^L_aa, qt^L_ab) per output unit."""
    if loss == "mse":
        return q_aa + target_second_moment, q_ab
    if loss == "binary_cross_entropy":  # labels 0/1 with probability 1/2, independent of inputs
        c = q_ab / q_aa if q_aa > 0 else 0.0
        e_pp = expect(lambda z: _sigmoid(z) ** 2, q_aa)  # E(p - y)^2 = E p^2 - E p + 1/2
        return e_pp, expect2(_sigmoid, _sigmoid, q_aa, q_aa, c) - 0.25
    if loss != "cross_entropy":
        raise UnknownChoiceError("loss", loss, LOSSES)
    pp, pq = _softmax_moments(q_aa, q_ab, k)
    return (pp + 1 - 2 / k) / k, (pq - 1 / k) / k


def cross_forward(
    widths: Sequence[int],
    acts: Sequence[Activation],
    weight_vars: Sequence[float],
    bias_vars: Sequence[float],
    rec: Recursion,
    a0_ab: float,
) -> tuple[list[float], list[float]]:
    """q^l_ab (l = 1..L) and a^l_ab (l = 0..L-1) for two distinct examples."""
    q_ab: list[float] = []
    a_ab = [float(a0_ab)]
    for i, (v, s) in enumerate(zip(weight_vars, bias_vars, strict=True)):
        q_ab.append(widths[i] * v * a_ab[i] + s)
        if i < len(acts):
            c = q_ab[i] / rec.q[i] if rec.q[i] > 0 else 1.0
            a_ab.append(acts[i].cross_moment(rec.q[i], rec.q[i], c))
    return q_ab, a_ab


def batch_grad2(
    widths: Sequence[int],
    acts: Sequence[Activation],
    weight_vars: Sequence[float],
    bias_vars: Sequence[float],
    rec: Recursion,
    batch_size: int,
    *,
    a0_ab: float = 0.0,
    loss: str = "cross_entropy",
    target_second_moment: float = 1.0,
) -> list[float]:
    """E||G_l||^2 of the batch-mean weight gradient, l = 1..L (absolute, per the loss above).

    Example (ReLU, He init: the batch gradient's first/readout ratio falls with B, theory.md 9.3):
        >>> from gradprobe.theory.activations import get_activation
        >>> from gradprobe.theory.recursion import run
        >>> w = [64] * 10 + [10]
        >>> v, s, acts = [2 / n for n in w[:-1]], [0.0] * 10, [get_activation("relu")] * 9
        >>> g = batch_grad2(w, acts, v, s, run(w, acts, v, s), 16)
        >>> f"{(g[0] / g[-1]) ** 0.5:.2f}"
        '0.61'
    """
    q_ab, a_ab = cross_forward(widths, acts, weight_vars, bias_vars, rec, a0_ab)
    t_aa, t_ab = _output_terms(loss, rec.q[-1], q_ab[-1], widths[-1], target_second_moment)
    qt_ab = [t_ab]
    for i in range(len(acts) - 1, -1, -1):
        c = q_ab[i] / rec.q[i] if rec.q[i] > 0 else 1.0
        gain = widths[i + 2] * weight_vars[i + 1] * acts[i].cross_gain(rec.q[i], rec.q[i], c)
        qt_ab.insert(0, gain * qt_ab[0])
    inv_b = 1.0 / batch_size
    return [
        widths[i]
        * widths[i + 1]
        * (inv_b * t_aa * rec.qt[i] * rec.a[i] + (1 - inv_b) * qt_ab[i] * a_ab[i])
        for i in range(len(rec.qt))
    ]
