"""Fixed points, chi_1 and depth scales: known critical points and theory.md table 9.1."""

from __future__ import annotations

import math

import pytest

from gradprobe.theory import chi1, depth_scale, fixed_point, isometry_ratio, predict_mlp

W = [64] * 10 + [10]


@pytest.mark.parametrize("widths", [W, [8, 64, 64, 64, 1], [32, 128, 256, 64, 10]])
def test_known_critical_points(widths: list[int]) -> None:
    relu = predict_mlp(widths, "relu", init=None, weight_var=2.0, bias_var=0.0)
    tanh = predict_mlp(widths, "tanh", init=None, weight_var=1.0, bias_var=0.0)
    assert relu.chi1 == pytest.approx(1.0, abs=1e-6)
    assert tanh.chi1 == pytest.approx(1.0, abs=1e-6)
    assert relu.verdict.kind == tanh.verdict.kind == "critical"


# activation, sigma_w^2, sigma_b^2, q*, chi_1, xi  (theory.md 9.1)
TABLE_9_1 = [
    ("sigmoid", 1.0, 0.0, 0.265, 0.0557, 0.35),
    ("sigmoid", 16.0, 0.0, 5.86, 0.399, 1.09),
    ("sigmoid", 1 / 3, 1 / 192, 0.090, 0.020, 0.26),
    ("tanh", 25 / 9, 0.0, 1.18, 1.21, None),
    ("tanh", 1 / 3, 1 / 192, 0.0078, 0.328, 0.90),
    ("relu", 1.0, 0.0, 0.0, 0.5, 1.44),
    ("relu", 1 / 3, 1 / 192, 0.0063, 0.167, 0.56),
]


@pytest.mark.parametrize(("act", "sw2", "sb2", "q_star", "chi", "xi"), TABLE_9_1)
def test_table_9_1(act: str, sw2: float, sb2: float, q_star: float, chi: float, xi) -> None:  # type: ignore[no-untyped-def]
    assert fixed_point(act, sw2, sb2) == pytest.approx(q_star, rel=0.01, abs=1e-4)
    assert chi1(act, sw2, sb2) == pytest.approx(chi, rel=0.01)
    if xi is not None:
        assert depth_scale(chi1(act, sw2, sb2)) == pytest.approx(xi, rel=0.02)


def test_sigmoid_needs_sigma_w2_about_103_for_criticality() -> None:
    assert chi1("sigmoid", 103.0) == pytest.approx(1.0, abs=2e-3)
    assert fixed_point("sigmoid", 103.0) == pytest.approx(45.6, rel=0.01)


def test_network_chi1_uses_the_typical_hidden_layer() -> None:
    assert predict_mlp(W, "sigmoid", "glorot_uniform").chi1 == pytest.approx(0.0557, abs=1e-4)
    assert predict_mlp(W, "sigmoid", "glorot_uniform", gain=4).chi1 == pytest.approx(
        0.399, abs=1e-3
    )
    p = predict_mlp(W, "relu", "torch_default")
    assert (p.chi1, p.depth_scale) == (pytest.approx(1 / 6), pytest.approx(0.558, abs=1e-3))


def test_isometry_ratio() -> None:
    assert isometry_ratio("relu", 3.0) == 2.0
    assert isometry_ratio("tanh", 1 / 64) == pytest.approx(1.0, abs=0.05)
    p = predict_mlp([800] * 11, "relu", "he_normal")
    assert p.jacobian_spectrum_var == pytest.approx(2 * 9)


def test_depth_scale_and_trainable_depth() -> None:
    p = predict_mlp(W, "relu", "he_uniform")
    assert math.isinf(p.depth_scale) and math.isinf(p.trainable_depth)
    assert p.to_dict()["depth_scale"] is None
