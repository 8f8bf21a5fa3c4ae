"""Issue 14: every verdict names its own phase (ordered chi1 < 1, critical chi1 = 1 within a
tolerance, chaotic chi1 > 1); ReLU with Glorot init is a backward-signal-only warning."""

from __future__ import annotations

import math
import re

import pytest
from click.testing import CliRunner

from gradprobe.cli import main
from gradprobe.theory import predict_mlp
from gradprobe.theory.verdicts import CHI1_TOL, phase, verdict

DEEP = [64] * 21 + [1]  # `gradprobe predict --depth 20`: 20 hidden layers and the readout
INITS = ["glorot_uniform", "he_normal", "lecun_normal", "orthogonal", "torch_default"]
PHASES = ("ordered", "critical", "chaotic")


def _expected_phase(chi1: float) -> str:
    if abs(math.log(chi1)) < CHI1_TOL:
        return "critical"
    return "ordered" if chi1 < 1 else "chaotic"


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
def test_each_verdict_names_its_own_phase(activation, init):
    v = predict_mlp(DEEP, activation, init).verdict
    assert v.phase == _expected_phase(v.chi1)
    named = set(re.findall(r"(\w+) phase", v.message))
    assert named == {v.phase}, v.message
    if v.kind == "critical":
        assert v.phase == "critical"
    if v.kind == "vanishing":
        assert v.phase == "ordered" or "ratio" in v.message
    assert v.message.startswith(
        {"critical": "critical", "stable": "stable", "vanishing": "vanishing"}.get(
            v.kind, "exploding"
        )
    )


def test_tanh_glorot_is_critical_not_ordered():
    """chi1 computes to 0.9999999999999332 at sigma_w^2 = 1; it read as "(ordered phase)"."""
    p = predict_mlp(DEEP, "tanh", "glorot_uniform")
    assert p.chi1 == pytest.approx(1.0, abs=1e-9) and p.chi1 != 1.0
    assert (p.verdict.kind, p.verdict.phase, p.verdict.severity) == ("critical", "critical", "ok")
    assert "ordered" not in p.verdict.message


@pytest.mark.parametrize(
    ("activation", "init", "weight_var", "kind", "phase_", "severity"),
    [
        ("tanh", "glorot_uniform", None, "critical", "critical", "ok"),
        ("tanh", None, 1.0, "critical", "critical", "ok"),
        ("tanh", "he_normal", None, "stable", "chaotic", "ok"),  # chi1 1.11, xi 10: depth ok
        ("tanh", None, 0.5, "vanishing", "ordered", "warning"),
        ("relu", "he_normal", None, "critical", "critical", "ok"),
        ("relu", "glorot_uniform", None, "vanishing", "ordered", "warning"),
        ("relu", None, 2.5, "stable", "chaotic", "ok"),
        ("sigmoid", "glorot_uniform", None, "vanishing", "ordered", "error"),
        ("sigmoid", None, 103.0, "critical", "critical", "ok"),  # theory.md 0.4
    ],
)
def test_phase_and_verdict_at_several_inits(activation, init, weight_var, kind, phase_, severity):
    bias = None if weight_var is None else 0.0
    v = predict_mlp(DEEP, activation, init, weight_var=weight_var, bias_var=bias).verdict
    assert (v.kind, v.phase, v.severity) == (kind, phase_, severity)


def test_relu_glorot_says_backward_signal_only_and_he_init():
    p = predict_mlp([8] + [64] * 10 + [1], "relu", "glorot_uniform", loss="mse")
    v = p.verdict
    assert v.backward_only and v.severity == "warning" and v.kind == "vanishing"
    assert 1e-2 < p.delta_norm_by_depth[0] < math.exp(-3)  # past 6 xi, not below 1e-2
    assert 0.5 < p.grad_norm_by_depth[0] < 2  # the weight gradients stay level
    assert "weight gradients level" in v.message and "activations shrink" in v.message
    assert "He initialisation" in v.message


def test_phase_tolerance():
    assert phase(1.0 + 0.5 * CHI1_TOL) == "critical"
    assert phase(1.0 + 2 * CHI1_TOL) == "chaotic"
    assert phase(1.0 - 2 * CHI1_TOL) == "ordered"
    assert verdict(1.0, math.inf, 10, 1.0, 1.0).to_dict()["phase"] == "critical"


def test_cli_predict_tanh_depth_20_is_critical_in_the_critical_phase():
    res = CliRunner().invoke(main, ["predict", "--activation", "tanh", "--depth", "20"])
    assert res.exit_code == 0, res.output
    line = next(x for x in res.output.splitlines() if x.startswith("verdict:"))
    assert line.startswith("verdict: critical: chi1 = 1, critical phase")
    assert "ordered" not in res.output and "chaotic" not in res.output
