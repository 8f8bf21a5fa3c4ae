"""Issue 14: diagnose, check and the theory say the same thing about the same net, and number
layers from 1 at the input beside their module names."""

from __future__ import annotations

import json

import pytest
import torch
from diagnose_cases import case, glorot, mlp, seeded
from torch import nn

from gradprobe.diagnosis import diagnose, verdict
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


# ---------------------------------------------------------------- vanishing at initialisation
def _decay_at_step_0(step, depth, p, lay):
    """||dL/dh|| x0.5 per layer towards the input at step 0 only; weight gradients level."""
    if step == 0:
        lay["backward_norm"] = 0.5 ** (9 - depth)


def test_vanishing_at_initialisation_that_training_undoes_is_information_not_healthy():
    """The demo's California relu: ||dL/dh|| first/last 0.026 at step 0, level from the next
    recorded step on; it was "healthy: no finding" beside a theory box saying "vanishing"."""
    from synthetic import tables
    from test_false_alarms import assert_text_matches_evidence

    found = diagnose(tables([1.0] * 10, activation="relu", edit=_decay_at_step_0))
    assert [(f.code, f.severity) for f in found] == [("vanishing", "info")]
    v = found[0]
    assert v.steps == (0,) and v.evidence["level_by_step"] == 1
    assert v.evidence["per_layer_factor"] == pytest.approx(0.5)
    assert v.evidence["chi1_measured"] == pytest.approx(0.25)
    assert v.summary.startswith("at initialisation (step 0) the backward signal")
    assert "ordered phase" in v.summary and "weight gradients stay level" in v.summary
    assert "training undid it by step 1" in v.summary
    assert v.remedies[0].name == "he_init"
    assert_text_matches_evidence(v)
    assert verdict(found) == "trains, with notes: vanishing"


def test_a_persistent_backward_only_decay_is_still_a_warning():
    from synthetic import tables

    decay = [0.5 ** (9 - d) for d in range(10)]
    params, layers = tables(decay, activation="relu")
    params["pe_grad_rms"] = 1.0  # weight gradients level
    (v,) = diagnose((params, layers))
    assert (v.code, v.severity) == ("vanishing", "warning")
    assert "level_by_step" not in v.evidence and "ordered phase" in v.summary


def test_healthy_nets_get_no_vanishing_at_initialisation():
    """He-init ReLU and critical tanh start level: nothing to note at step 0 either."""
    for name in ("relu_he", "tanh_glorot", "residual"):
        assert diagnose(case(name, 0, steps=8)) == [], name


# ---------------------------------------------------------------- one vocabulary, one net
def _words(text: str) -> set[str]:
    return {w for w in ("ordered phase", "backward signal", "weight gradients") if w in text}


def test_check_diagnose_report_and_predict_say_the_same_of_relu_glorot(tmp_path):
    """The demo's ReLU + Glorot net (10 x 64): theory (predict and the report's theory box),
    check, diagnose and the report name the same phase and the same phenomenon."""
    from datetime import UTC, datetime

    from click.testing import CliRunner

    import gradprobe
    from gradprobe.cli import main
    from gradprobe.experiments.runner import run_experiment
    from gradprobe.experiments.spec import resolve
    from gradprobe.report.context import build

    config = resolve(
        "classification", variant="deep-relu", activation="relu", init="glorot_uniform",
        depth=10, width=64, optimizer="sgd", lr=0.01, epochs=2, seed=0,
    )  # fmt: skip
    run = run_experiment(config, tmp_path / "run", seeds=1).run
    name = run.variants[0]

    args = [
        "predict",
        "--activation",
        "relu",
        "--init",
        "glorot_uniform",
        "--depth",
        "10",
        "--width",
        "64",
    ]
    cli = CliRunner().invoke(main, args)
    assert cli.exit_code == 0, cli.output
    said = " ".join(cli.output.split())
    assert "verdict: vanishing backward signal, weight gradients level" in said
    assert _words(said) == {"ordered phase", "backward signal", "weight gradients"}

    ctx = build(run, datetime(2026, 1, 1, tzinfo=UTC), figures={})
    (variant,) = ctx["variants"]
    theory = variant["theory"]
    assert theory["kind"] == "vanishing" and _words(theory["message"]) == _words(said)
    assert "lower the learning rate" in theory["message"]
    assert not variant["verdict"].startswith("healthy")

    found = [f for f in diagnose(run) if f.variant == name]
    v = next(f for f in found if f.code == "vanishing")
    assert v.severity in ("info", "warning")
    assert _words(v.summary) == {"ordered phase", "backward signal", "weight gradients"}
    assert any(v.summary in n for n in theory["notes"])  # the theory box quotes the diagnosis
    assert variant["verdict"] == gradprobe.diagnosis.verdict(found)

    seeded(0)
    net = mlp("relu", 10, 64, glorot, n_in=64)
    result = check(net, torch.randn(256, 64), torch.randn(256, 1), nn.MSELoss())
    (c,) = result.findings
    assert (c.code, c.severity) == ("vanishing", "warning")  # one step: the net as initialised
    assert _words(c.summary) == {"ordered phase", "backward signal", "weight gradients"}
    assert c.remedies[0].name == "he_init" and "learning rate" in c.remedies[0].why
