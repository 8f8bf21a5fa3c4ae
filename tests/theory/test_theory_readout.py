"""The softmax readout's moments: deterministic 1-D reductions against Monte Carlo, and fast."""

from __future__ import annotations

import time

import numpy as np
import pytest

from gradprobe.errors import UnknownChoiceError, UsageError
from gradprobe.theory.readout import (
    _softmax_moments,
    canonical_loss,
    check_loss,
    cross_entropy_moments,
    default_loss,
    readout_moments,
    signal_overlaps,
)


def _monte_carlo(q_u: float, s: float, k: int, n: int, seed: int = 0) -> tuple[float, float]:
    """E||p - e_y||^2 and E[(u . (p - e_y))^2] over u ~ N(0, q_u), b ~ N(0, s), uniform y."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((n, k)) * np.sqrt(q_u)
    z = u + rng.standard_normal((n, k)) * np.sqrt(s)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(n), rng.integers(0, k, n)] -= 1
    return float((p * p).sum(1).mean()), float(((u * p).sum(1) ** 2).mean())


@pytest.mark.parametrize(
    ("q_u", "s", "k"),
    [(2.0, 0.0, 10), (0.3, 1 / 192, 10), (1.73, 0.0, 2), (5.0, 0.5, 3), (1.0, 0.0, 100)],
)
def test_moments_match_monte_carlo(q_u: float, s: float, k: int) -> None:
    m = cross_entropy_moments(q_u, s, k)
    delta2, overlap2 = _monte_carlo(q_u, s, k, 400_000 if k < 100 else 40_000)
    assert m.delta2 == pytest.approx(delta2, rel=3e-3)
    assert m.overlap2 == pytest.approx(overlap2, rel=1.5e-2)
    assert m.independent_overlap2 == pytest.approx(q_u * m.delta2)


def test_limits() -> None:
    """No signal: p uniform, delta2 = 1 - 1/K; bias only: no overlap excess (u independent)."""
    assert cross_entropy_moments(0.0, 0.0, 10).delta2 == pytest.approx(0.9)
    tiny = cross_entropy_moments(1e-8, 1.0, 10)
    assert tiny.excess == pytest.approx(0.0, abs=1e-9)
    # beyond SIGMA_MAX the softmax is one-hot: ||p||^2 = 1, (z.p)^2 scales with sigma^2
    lo, hi = _softmax_moments(99.0, 10), _softmax_moments(101.0, 10)
    assert hi[0] == pytest.approx(lo[0], rel=1e-3)
    assert hi[1] / 101.0**2 == pytest.approx(lo[1] / 99.0**2, rel=1e-3)


def test_fast_for_a_thousand_classes() -> None:
    _softmax_moments.cache_clear()
    start = time.perf_counter()
    m = cross_entropy_moments(2.0, 0.0, 1000)
    assert time.perf_counter() - start < 0.05
    assert m.delta2 == pytest.approx(_monte_carlo(2.0, 0.0, 1000, 20_000)[0], rel=5e-3)


def test_loss_names_and_checks() -> None:
    assert canonical_loss("CE") == "cross_entropy" and canonical_loss("bce").startswith("binary")
    assert default_loss(10) == "cross_entropy" and default_loss(1) == "mse"
    with pytest.raises(UnknownChoiceError, match="expected one of cross_entropy"):
        canonical_loss("hinge")
    with pytest.raises(UsageError, match="needs >= 2 outputs"):
        check_loss("cross_entropy", 1)
    with pytest.raises(UsageError, match="needs 1 output"):
        check_loss("bce", 10)


@pytest.mark.parametrize(("q_u", "s"), [(2.0, 0.0), (1.0, 0.3)])
def test_binary_and_squared_error_moments_match_monte_carlo(q_u: float, s: float) -> None:
    rng = np.random.default_rng(1)
    n = 1_000_000
    u = rng.standard_normal(n) * np.sqrt(q_u)
    z = u + rng.standard_normal(n) * np.sqrt(s)
    d = 1 / (1 + np.exp(-z)) - rng.integers(0, 2, n)
    m = readout_moments("bce", q_u, s, 1)
    assert m.delta2 == pytest.approx(np.mean(d * d), rel=3e-3)
    assert m.overlap2 == pytest.approx(np.mean((u * d) ** 2), rel=1e-2)
    u3 = rng.standard_normal((n, 3)) * np.sqrt(q_u)
    d3 = u3 + rng.standard_normal((n, 3)) * np.sqrt(s) - rng.standard_normal((n, 3))
    m = readout_moments("mse", q_u, s, 3)
    assert m.delta2 == pytest.approx(np.mean((d3 * d3).sum(1)), rel=3e-3)
    assert m.overlap2 == pytest.approx(np.mean((u3 * d3).sum(1) ** 2), rel=1e-2)


def test_signal_overlaps_match_monte_carlo() -> None:
    """rho^2, tau_d, tau_o of two examples' softmax delta^L (independent logits and labels)."""
    rng = np.random.default_rng(2)
    n, k, q_u = 400_000, 10, 2.0

    def delta() -> np.ndarray:
        z = rng.standard_normal((n, k)) * np.sqrt(q_u)
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(n), rng.integers(0, k, n)] -= 1
        return p

    d1, d2 = delta(), delta()
    norm2 = np.mean((d1 * d1).sum(1)) ** 2
    rho2, tau_d, tau_o = signal_overlaps("cross_entropy", q_u, 0.0, k)
    assert rho2 == pytest.approx(np.mean((d1 * d2).sum(1) ** 2) / norm2, rel=2e-2)
    assert tau_d == pytest.approx(np.mean((d1**4).sum(1)) / norm2, rel=5e-3)
    assert tau_o == pytest.approx(np.mean((d1**2 * d2**2).sum(1)) / norm2, rel=2e-2)
