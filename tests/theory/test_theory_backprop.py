"""The prediction against numpy backprop over many random 10-layer width-64 nets (slow reference).

Per net: standardised inputs (batch 64), random labels, softmax cross-entropy over 10 classes;
per-example weight gradients ||delta_b|| ||x_b|| of every layer, RMS over the batch. Two summaries
over 200 seeds: the pooled RMS ratio (what mean-field theory predicts: E||grad W||^2 over random
nets) and the geometric mean of per-net ratios (issue 5's acceptance measure).
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from theory_reference import backprop, per_example_grad_rms

from gradprobe.theory import get_activation, layer_variances, predict_mlp
from gradprobe.theory.readout import cross_entropy_moments
from gradprobe.theory.recursion import readout_excess, run

W = [64] * 10 + [10]
SEEDS = 200
CASES = [
    (a, i)
    for a in ("sigmoid", "tanh", "relu")
    for i in ("glorot_uniform", "he_uniform", "torch_default")
]
# The geometric mean of per-net ratios differs from the ensemble (pooled) value by a finite-width
# log-normal offset, largest for ReLU (1.053, 1.057 and 0.945 times the ensemble prediction over
# these 200 seeds): it is predicted separately, as first_to_last_typical.


@cache
def _rms(act: str, init: str) -> np.ndarray:
    return np.array([per_example_grad_rms(W, act, init, seed) for seed in range(SEEDS)])


@pytest.mark.parametrize(("act", "init"), CASES)
def test_first_to_readout_ratio_matches_pooled_backprop(act: str, init: str) -> None:
    rms = _rms(act, init)
    pooled = np.sqrt(np.mean(rms[:, 0] ** 2) / np.mean(rms[:, -1] ** 2))
    assert pooled == pytest.approx(predict_mlp(W, act, init).first_to_last, rel=0.05)


@pytest.mark.parametrize(("act", "init"), CASES)
def test_typical_ratio_matches_geometric_mean(act: str, init: str) -> None:
    rms = _rms(act, init)
    geo = np.exp(np.mean(np.log(rms[:, 0] / rms[:, -1])))
    p = predict_mlp(W, act, init, batch_size=64)
    assert geo == pytest.approx(p.first_to_last_typical, rel=0.05)


@pytest.mark.parametrize(("act", "init"), [("relu", "glorot_uniform"), ("sigmoid", "he_uniform")])
def test_typical_ratio_at_width_32(act: str, init: str) -> None:
    """The offset grows like 1/width: at width 32 ReLU/Glorot's geometric mean is 1.13 times the
    ensemble prediction; the typical-net prediction follows it."""
    w = [32] * 10 + [10]
    rms = np.array([per_example_grad_rms(w, act, init, seed) for seed in range(SEEDS)])
    geo = np.exp(np.mean(np.log(rms[:, 0] / rms[:, -1])))
    p = predict_mlp(w, act, init, batch_size=64)
    assert geo == pytest.approx(p.first_to_last_typical, rel=0.05)
    assert abs(np.log(geo / p.first_to_last_typical)) < abs(np.log(geo / p.first_to_last))


def test_relu_he_is_gradient_independence_with_frozen_softmax() -> None:
    """With p held at 1/K (no logit feedback) the pooled ratio is the independent 1.00."""
    rms = np.array(
        [
            per_example_grad_rms(W, "relu", "he_uniform", s, frozen_softmax=True)
            for s in range(SEEDS)
        ]
    )
    pooled = np.sqrt(np.mean(rms[:, 0] ** 2) / np.mean(rms[:, -1] ** 2))
    independent = predict_mlp(W, "relu", "he_uniform", readout_coupling=False).first_to_last
    assert pooled == pytest.approx(independent, rel=0.02)


def test_readout_coupling_profile_relu_he() -> None:
    """E||delta^l||^2 / E||delta^L||^2 layer by layer: the coupling's rise, 0 when p is frozen.

    Gaussian weights (the split of W^l is exact for them); 1000 nets of batch 64. Measured (1500
    nets): 1.278, 1.245, 1.216, 1.185, 1.149, 1.116, 1.081, 1.058, 1.031, 1 against the predicted
    1.257, 1.232, 1.206, 1.179, 1.152, 1.123, 1.094, 1.064, 1.032, 1.
    """
    acts, v, s = [get_activation("relu")] * 9, [2 / n for n in W[:-1]], [0.0] * 10
    rec = run(W, acts, v, s)
    m = cross_entropy_moments(W[-2] * v[-1] * rec.a[-2], 0.0, W[-1])
    predicted = 1 + np.array(readout_excess(W, acts, v, s, rec, m.delta2, m.excess))
    for frozen, expected in ((False, predicted), (True, np.ones(10))):
        d2 = np.concatenate(
            [
                backprop(W, "relu", "he_normal", seed, frozen_softmax=frozen)[0]
                for seed in range(1000)
            ],
            axis=1,
        ).mean(axis=1)
        assert d2 / d2[-1] == pytest.approx(expected, rel=0.04)


def test_per_layer_profile_matches_for_sigmoid() -> None:
    rms = np.array([per_example_grad_rms(W, "sigmoid", "glorot_uniform", s) for s in range(50)])
    measured = np.sqrt(np.mean(rms**2, axis=0) / np.mean(rms[:, -1] ** 2))
    predicted = predict_mlp(W, "sigmoid", "glorot_uniform").grad_norm_by_depth
    assert measured == pytest.approx(predicted, rel=0.05)


@pytest.mark.parametrize("loss", ["mse", "binary_cross_entropy"])
@pytest.mark.parametrize(
    ("act", "init"),
    [("relu", "he_uniform"), ("relu", "glorot_uniform"), ("tanh", "glorot_uniform")],
)
def test_one_output_readouts_match_pooled_backprop(loss: str, act: str, init: str) -> None:
    """One output (squared error, binary cross-entropy): coupling and logit-scale spread both
    count; for ReLU/He the coupling alone would say 1.15 (mse), measured 0.95."""
    w = [64] * 10 + [1]
    rms = np.array([per_example_grad_rms(w, act, init, s, loss=loss) for s in range(SEEDS)])
    pooled = np.sqrt(np.mean(rms[:, 0] ** 2) / np.mean(rms[:, -1] ** 2))
    assert pooled == pytest.approx(predict_mlp(w, act, init, loss=loss).first_to_last, rel=0.05)


def test_spread_of_the_last_hidden_norm() -> None:
    """Var ln ||x^9||^2 of one example over nets and inputs, and its covariance with
    ln ||delta^1||^2 ||x^0||^2, against the log-normal spread of the theory.

    Measured (300 nets x 64 examples): ReLU V = 0.722 (predicted 0.734), C = 0.230 (0.172); tanh
    V = 0.091 (0.087), C = -0.049 (-0.049). For ReLU the covariance comes out about 0.06 short:
    the theory treats a weight matrix's forward and backward use as independent.
    """
    from gradprobe.theory.spread import spread

    for act, init in (("relu", "he_uniform"), ("tanh", "glorot_uniform")):
        acts, (v, s) = [get_activation(act)] * 9, layer_variances(W, init)
        sp = spread(W, acts, s, run(W, acts, v, s), 2 / 64)
        ln_f, ln_n = [], []
        for seed in range(300):
            d2, x2 = backprop(W, act, init, seed, frozen_softmax=True)
            ln_f.append(np.log(x2[-1]))
            ln_n.append(np.log(d2[0] * x2[0]))
        ln_f, ln_n = np.concatenate(ln_f), np.concatenate(ln_n)
        assert np.var(ln_f) == pytest.approx(sp.log_var, rel=0.1)
        cov = np.cov(ln_f, ln_n)[0, 1]
        if act == "relu":
            assert sp.grad_cov[0] < cov < sp.grad_cov[0] + 0.08
        else:
            assert cov == pytest.approx(sp.grad_cov[0], abs=0.01)
