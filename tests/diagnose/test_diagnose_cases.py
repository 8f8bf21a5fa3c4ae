"""Known cases over several seeds: each pathology is found, healthy nets raise nothing."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from diagnose_cases import case

from gradprobe.diagnosis import diagnose
from gradprobe.diagnosis.view import split

SEEDS = range(4)


def codes(obj) -> dict[str, str]:
    return {f.code: f.severity for f in diagnose(obj)}


@pytest.fixture(autouse=True)
def _quiet_numpy(one_thread):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NaN reductions in the NaN case
        yield


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", ["relu_he", "tanh_glorot", "residual"])
def test_healthy_nets_raise_nothing(name, seed):
    assert diagnose(case(name, seed)) == []


@pytest.mark.parametrize("batch", [16, 256, 1024])
def test_relu_he_is_healthy_at_every_batch_size(batch):
    """theory.md 9.3: batch-mean ratios fall with the batch size; the verdict must not."""
    assert diagnose(case("relu_he", 0, batch=batch)) == []


@pytest.mark.parametrize("seed", SEEDS)
def test_deep_sigmoid_vanishes(seed):
    found = diagnose(case("deep_sigmoid", seed))
    v = next(f for f in found if f.code == "vanishing")
    assert v.severity == "error"
    assert v.evidence["first_last_ratio"] < 1e-4
    assert 0.1 < v.evidence["per_layer_factor"] < 0.4  # sqrt(chi_1) = 0.236 (theory.md 9.1)
    assert v.layers[0] == "0"


@pytest.mark.parametrize("seed", SEEDS)
def test_large_init_explodes(seed):
    c = codes(case("large_init", seed))
    assert c.get("exploding") == "error"
    assert "vanishing" not in c


@pytest.mark.parametrize("seed", SEEDS)
def test_injected_nan_is_non_finite(seed):
    found = diagnose(case("nan", seed))
    assert [f.code for f in found] == ["non_finite"]
    assert found[0].evidence["first_step"] == 0


@pytest.mark.parametrize("seed", SEEDS)
def test_large_negative_bias_kills_units(seed):
    found = diagnose(case("dead_bias", seed))
    dead = next(f for f in found if f.code == "dead_units")
    assert dead.severity == "error" and "6" in dead.layers
    assert dead.layers[0] == "6"  # the layers below still fire


@pytest.mark.parametrize("seed", SEEDS)
def test_sigmoid_with_large_weights_saturates(seed):
    found = diagnose(case("saturated_sigmoid", seed))
    sat = next(f for f in found if f.code == "saturation")
    assert sat.evidence["max_saturated_frac"] > 0.25


@pytest.mark.parametrize("seed", SEEDS)
def test_tiny_lr_stalls_every_layer(seed):
    found = diagnose(case("tiny_lr", seed))
    assert [f.code for f in found] == ["stalled_layers"]
    assert found[0].evidence["layers_stalled"] == found[0].evidence["layers_with_updates"]
    assert found[0].remedies[0].name == "raise_lr"


def _batch_only(mon):
    """The tables as a monitor without backward signal or per-example capture would give."""
    params, layers = mon.to_pandas("params"), mon.to_pandas("layers")
    return params.assign(pe_grad_rms=np.nan), layers.assign(backward_norm=np.nan)


@pytest.mark.parametrize("seed", range(2))
def test_batch_mean_fallback_keeps_the_trap_in_mind(seed):
    healthy = case("relu_he", seed, batch=1024)
    rec = split(_batch_only(healthy))[0]
    w = rec.grid("grad_norm").iloc[0].to_numpy()
    assert w[0] / w[-1] < 0.5  # the trap: healthy, yet the batch ratio falls
    assert diagnose(_batch_only(healthy)) == []
    sick = diagnose(_batch_only(case("deep_sigmoid", seed)))
    v = next(f for f in sick if f.code == "vanishing")
    assert v.evidence["measure"].startswith("batch-mean")
