"""The prediction against numpy backprop over many random 10-layer width-64 nets (slow reference).

Per net: standardised inputs (batch 64), random labels, softmax cross-entropy; per-example weight
gradients ||delta_b|| ||x_b|| of every layer, RMS over the batch. Two summaries over 200 seeds:
the pooled RMS ratio (theory.md's protocol) and the geometric mean of per-net ratios.
"""

from __future__ import annotations

import numpy as np
import pytest
from theory_reference import per_example_grad_rms

from gradprobe.theory import predict_mlp

W = [64] * 10 + [10]
SEEDS = 200
CASES = [
    (a, i)
    for a in ("sigmoid", "tanh", "relu")
    for i in ("glorot_uniform", "he_uniform", "torch_default")
]


def _measure(act: str, init: str) -> tuple[float, float]:
    rms = np.array([per_example_grad_rms(W, act, init, seed) for seed in range(SEEDS)])
    pooled = np.sqrt(np.mean(rms[:, 0] ** 2) / np.mean(rms[:, -1] ** 2))
    geo = np.exp(np.mean(np.log(rms[:, 0] / rms[:, -1])))
    return float(pooled), float(geo)


@pytest.mark.parametrize(("act", "init"), CASES)
def test_first_to_readout_ratio_matches_backprop(act: str, init: str) -> None:
    if (act, init) == ("relu", "he_uniform"):
        pytest.xfail(
            "ReLU/He: measured 1.10-1.13 vs 1.00 (theory.md 9.2 measured 1.11): the softmax "
            "couples delta^L to W^L; see test_relu_he_exact_with_frozen_softmax"
        )
    predicted = predict_mlp(W, act, init).first_to_last
    pooled, geo = _measure(act, init)
    assert pooled == pytest.approx(predicted, rel=0.05)
    # the geometric mean adds a log-normal (Jensen) offset; within 5% for sigmoid and tanh,
    # within 6% for ReLU whose per-net spread is larger
    assert geo == pytest.approx(predicted, rel=0.05 if act != "relu" else 0.06)


def test_relu_he_exact_with_frozen_softmax() -> None:
    """With p held at 1/K (no logit feedback) the pooled ratio is the predicted 1.00."""
    rms = np.array(
        [
            per_example_grad_rms(W, "relu", "he_uniform", s, frozen_softmax=True)
            for s in range(SEEDS)
        ]
    )
    pooled = np.sqrt(np.mean(rms[:, 0] ** 2) / np.mean(rms[:, -1] ** 2))
    assert pooled == pytest.approx(predict_mlp(W, "relu", "he_uniform").first_to_last, rel=0.02)


def test_per_layer_profile_matches_for_sigmoid() -> None:
    rms = np.array([per_example_grad_rms(W, "sigmoid", "glorot_uniform", s) for s in range(50)])
    measured = np.sqrt(np.mean(rms**2, axis=0) / np.mean(rms[:, -1] ** 2))
    predicted = predict_mlp(W, "sigmoid", "glorot_uniform").grad_norm_by_depth
    assert measured == pytest.approx(predicted, rel=0.05)
