"""Issue 14: diagnose, check and the theory say the same thing about the same net, and number
layers from 1 at the input beside their module names."""

from __future__ import annotations

import json

import pytest
import torch
from diagnose_cases import case, glorot, mlp, seeded
from torch import nn

from gradprobe.diagnosis import diagnose
from gradprobe.theory import predict_mlp
from gradprobe.torch.check import check


@pytest.fixture(autouse=True)
def _one(one_thread):
    yield


@pytest.mark.parametrize("seed", range(4))
def test_relu_glorot_is_a_backward_only_vanishing_warning_not_healthy(seed):
    """ReLU + Glorot: ||dL/dh|| falls x0.71 per layer while the weight gradients stay level; it
    was "healthy: no finding" beside a theory box saying "vanishing"."""
    found = diagnose(case("relu_glorot", seed))
    v = next(f for f in found if f.code == "vanishing")
    assert v.severity == "warning"
    assert v.evidence["first_last_ratio"] < 0.05 and v.evidence["per_layer_factor"] < 0.9
    assert 0.3 < v.evidence["per_example_grad_ratio"] < 3  # the weight gradients stay level
    assert "weight gradients stay level" in v.summary
    assert "activations shrink" in v.explanation
    assert v.remedies[0].name == "he_init"
    theory = predict_mlp([32] + [64] * 12 + [1], "relu", "glorot_uniform", loss="mse").verdict
    assert (theory.kind, theory.severity, theory.backward_only) == ("vanishing", "warning", True)


def test_check_and_diagnose_agree_on_relu_glorot():
    seeded(0)
    model = mlp("relu", 12, 64, glorot)
    x, y = torch.randn(128, 32), torch.randn(128, 1)
    result = check(model, x, y, nn.MSELoss())
    assert [(f.code, f.severity) for f in result.findings] == [("vanishing", "warning")]
    assert result.verdict == "trains, with problems: vanishing"


def test_findings_carry_depths_from_1_at_the_input_beside_module_names():
    found = diagnose(case("deep_sigmoid", 0))
    v = next(f for f in found if f.code == "vanishing")
    # Sequential names count modules (Linear, Sigmoid, Linear, ...): '0', '2', '4', ...
    assert v.layers[:3] == ("0", "2", "4")
    assert v.depths[:3] == (1, 2, 3)
    d = json.loads(json.dumps(v.to_dict()))
    assert d["depths"][:3] == [1, 2, 3] and d["layers"][:3] == ["0", "2", "4"]
    assert v.where.startswith("layers 1-") and "modules '0', '2', '4'" in v.where


def test_dead_layer_is_numbered_from_the_input():
    dead = next(f for f in diagnose(case("dead_bias", 0)) if f.code == "dead_units")
    assert dead.layers[0] == "6" and dead.depths[0] == 4  # the fourth hidden layer
    assert dead.where.startswith("layer 4 (module '6')") or dead.where.startswith("layers 4")


def test_summaries_do_not_repeat_their_code():
    for name in ("deep_sigmoid", "dead_bias", "saturated_sigmoid", "tiny_lr", "large_init"):
        for f in diagnose(case(name, 0)):
            words = f.code.replace("_", " ")
            assert not f.summary.lower().startswith(words.split()[0]), f.summary
