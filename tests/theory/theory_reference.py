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


def _output_delta(rng, logits, loss, frozen):
    """delta^L = dl/dh^L per example for random targets independent of the inputs."""
    batch, k = logits.shape
    if loss == "mse":  # targets N(0, 1)
        target = rng.standard_normal((batch, k))
        return (np.zeros_like(logits) if frozen else logits) - target
    if loss == "binary_cross_entropy":  # one sigmoid output, labels 0/1
        p = np.full_like(logits, 0.5) if frozen else 1 / (1 + np.exp(-logits))
        return p - rng.integers(0, 2, (batch, 1))
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    if frozen:
        p = np.full_like(p, 1.0 / k)
    return p - np.eye(k)[rng.integers(0, k, batch)]


def backprop(widths, activation, init, seed, batch=64, gain=1.0, frozen_softmax=False, loss="ce"):
    """Per-example ||delta_b^l||^2 and ||x_b^{l-1}||^2, arrays (layers, batch), layers in order.

    Standardised Gaussian inputs, random targets, exact numpy backprop. ``loss``: "ce" (softmax
    cross-entropy, uniform labels), "binary_cross_entropy" or "mse" (N(0, 1) targets);
    ``frozen_softmax`` cuts the feedback of the logits into delta^L (p held at 1/K, 1/2; for mse
    delta = -target).
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
    delta = _output_delta(rng, hs[-1], loss, frozen_softmax)
    d2, x2 = [], []
    for i in range(len(params) - 1, -1, -1):
        d2.insert(0, np.square(delta).sum(1))
        x2.insert(0, np.square(xs[i]).sum(1))
        if i:
            delta = (delta @ params[i][0].T) * act.dphi(hs[i - 1])
    return np.array(d2), np.array(x2)


def per_example_grad_rms(
    widths, activation, init, seed, batch=64, gain=1.0, frozen_softmax=False, loss="ce"
):
    """RMS over the batch of per-example ||dl/dW^l||_F = ||delta_b|| ||x_b||, layers in order."""
    d2, x2 = backprop(widths, activation, init, seed, batch, gain, frozen_softmax, loss)
    return np.sqrt(np.mean(d2 * x2, axis=1))


def measured_first_to_last(widths, activation, init, seeds, batch=64, gain=1.0) -> float:
    """Geometric mean over seeds of the per-example RMS ratio ||grad W^1|| / ||grad W^L||."""
    logs = []
    for seed in range(seeds):
        rms = per_example_grad_rms(widths, activation, init, seed, batch, gain)
        logs.append(np.log(rms[0] / rms[-1]))
    return float(np.exp(np.mean(logs)))
