"""Slow references for the theory tests: Monte-Carlo expectations and numpy backprop."""

from __future__ import annotations

import numpy as np

from gradprobe.theory import get_activation, init_variances


def mc_expect(f, q: float, n: int = 2_000_000, seed: int = 0) -> float:
    """E_z[f(sqrt(q) z)] by plain Monte Carlo."""
    z = np.random.default_rng(seed).standard_normal(n)
    return float(f(np.sqrt(q) * z).mean())


def sample_weights(rng, init: str, fan_in: int, fan_out: int, gain: float = 1.0):
    """W (fan_in x fan_out) and b as the named scheme draws them (uniform or normal)."""
    var = init_variances(init, fan_in, fan_out, gain)
    if init.endswith("normal"):
        w = rng.normal(0.0, np.sqrt(var.weight_var), (fan_in, fan_out))
    else:
        w = rng.uniform(-1.0, 1.0, (fan_in, fan_out)) * np.sqrt(3 * var.weight_var)
    b = rng.uniform(-1.0, 1.0, fan_out) * np.sqrt(3 * var.bias_var)
    return w, b


def per_example_grad_rms(widths, activation, init, seed, batch=64, gain=1.0, frozen_softmax=False):
    """RMS over the batch of per-example ||dl/dW^l||_F = ||delta_b|| ||x_b||, layers in order.

    Standardised Gaussian inputs, random labels, softmax cross-entropy, exact numpy backprop;
    ``frozen_softmax`` holds p at 1/K (cuts the feedback of the logits into delta^L).
    """
    rng = np.random.default_rng(seed)
    act = get_activation(activation)
    params = [
        sample_weights(rng, init, widths[i], widths[i + 1], gain) for i in range(len(widths) - 1)
    ]
    xs, hs = [rng.standard_normal((batch, widths[0]))], []
    for i, (w, b) in enumerate(params):
        hs.append(xs[-1] @ w + b)
        if i < len(params) - 1:
            xs.append(act.phi(hs[-1]))
    logits = hs[-1] - hs[-1].max(1, keepdims=True)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    if frozen_softmax:
        p = np.full_like(p, 1.0 / widths[-1])
    delta = p - np.eye(widths[-1])[rng.integers(0, widths[-1], batch)]
    norms = []
    for i in range(len(params) - 1, -1, -1):
        norms.insert(0, np.linalg.norm(delta, axis=1) * np.linalg.norm(xs[i], axis=1))
        if i:
            delta = (delta @ params[i][0].T) * act.dphi(hs[i - 1])
    return np.sqrt(np.mean(np.square(norms), axis=1))


def measured_first_to_last(widths, activation, init, seeds, batch=64, gain=1.0) -> float:
    """Geometric mean over seeds of the per-example RMS ratio ||grad W^1|| / ||grad W^L||."""
    logs = []
    for seed in range(seeds):
        rms = per_example_grad_rms(widths, activation, init, seed, batch, gain)
        logs.append(np.log(rms[0] / rms[-1]))
    return float(np.exp(np.mean(logs)))
