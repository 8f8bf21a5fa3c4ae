"""Gaussian expectations: trapezoid rule and closed forms against Monte Carlo and exact values."""

from __future__ import annotations

import numpy as np
import pytest
from theory_reference import mc_expect

from gradprobe.theory import ACTIVATIONS, get_activation
from gradprobe.theory._gauss import expect, expect2

MC_N = 2_000_000


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("q", [0.25, 1.0, 16.0])
def test_moments_match_monte_carlo(name: str, q: float) -> None:
    act = get_activation(name)
    for got, f in (
        (act.second_moment(q), lambda u: act.phi(u) ** 2),
        (act.gain(q), lambda u: act.dphi(u) ** 2),
        (act.gain4(q), lambda u: act.dphi(u) ** 4),
    ):
        samples_scale = max(abs(got), 1e-3)
        assert got == pytest.approx(mc_expect(f, q, MC_N), abs=0.01 * samples_scale + 1e-4)


def test_trapezoid_matches_relu_closed_forms() -> None:
    relu = get_activation("relu")
    for q in (0.1, 1.0, 100.0):
        assert expect(lambda u: relu.phi(u) ** 2, q) == pytest.approx(q / 2, rel=1e-9)
        assert expect(lambda u: relu.dphi(u) ** 2, q) == pytest.approx(0.5, rel=1e-9)


def test_trapezoid_stays_accurate_at_large_q() -> None:
    """tanh' at q = 16, where Gauss-Hermite-50 is off by 35% (theory.md 3.4)."""
    dense = np.linspace(-10, 10, 400_001)
    pz = np.exp(-(dense**2) / 2) / np.sqrt(2 * np.pi)
    exact = np.trapezoid((1 - np.tanh(4.0 * dense) ** 2) ** 2 * pz, dense)
    assert get_activation("tanh").gain(16.0) == pytest.approx(exact, rel=1e-10)
    assert get_activation("tanh").gain(1e6) == pytest.approx(
        4 / 3 / np.sqrt(2 * np.pi * 1e6), rel=1e-3
    )


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu", "leaky_relu", "linear"])
@pytest.mark.parametrize("c", [-0.5, 0.0, 0.6, 0.95])
def test_two_point_moments_match_monte_carlo(name: str, c: float) -> None:
    act, q_a, q_b = get_activation(name), 1.5, 0.7
    rng = np.random.default_rng(1)
    z1, z2 = rng.standard_normal((2, MC_N))
    u_a, u_b = np.sqrt(q_a) * z1, np.sqrt(q_b) * (c * z1 + np.sqrt(1 - c * c) * z2)
    mc_phi = float(np.mean(act.phi(u_a) * act.phi(u_b)))
    mc_dphi = float(np.mean(act.dphi(u_a) * act.dphi(u_b)))
    assert act.cross_moment(q_a, q_b, c) == pytest.approx(mc_phi, abs=3e-3)
    assert act.cross_gain(q_a, q_b, c) == pytest.approx(mc_dphi, abs=3e-3)


def test_closed_form_cross_moments_agree_with_quadrature() -> None:
    relu = get_activation("relu")
    for c in (-0.9, 0.0, 0.7, 0.999):
        assert relu.cross_moment(2.0, 0.5, c) == pytest.approx(
            expect2(relu.phi, relu.phi, 2.0, 0.5, c), abs=1e-4
        )
