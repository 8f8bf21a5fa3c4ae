"""The seeds' networks: the deep sigmoid nets of both notebooks are always flagged."""

from __future__ import annotations

import pytest

from gradprobe.diagnosis import diagnose
from gradprobe.experiments import data as datasets
from gradprobe.experiments.spec import resolve

torch_backend = pytest.importorskip("gradprobe.experiments.torch_backend")


@pytest.fixture(autouse=True)
def _one(one_thread):
    yield


def _train(config, data):
    out = {}
    for v in config.variants:
        outcome = torch_backend.train(v, data, config.train)
        out[v.name] = {f.code: f for f in diagnose(outcome.monitor)}
    return out


@pytest.mark.parametrize("seed", range(3))
def test_classification_deep_sigmoid_vanishes_and_relu_does_not(seed):
    config = resolve("classification", variant="deep-sigmoid,deep-relu-8", seed=seed)
    found = _train(config, datasets.classification())
    assert found["deep-sigmoid"]["vanishing"].severity == "error"
    relu = found["deep-relu-8"]
    assert "exploding" not in relu
    if "vanishing" in relu:  # Adam at lr 0.1 can silence a whole width-8 layer: then say so
        assert relu["dead_units"].severity == "error"


@pytest.mark.california
@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3))
def test_california_sigmoid_vanishes_and_relu_only_at_initialisation(seed, california_home):
    """ReLU + Glorot (chi1 = 0.5): ||dL/dh|| vanishes at step 0 and training undoes it within
    the first epoch; it was "healthy: no finding" beside a theory box saying "vanishing"."""
    config = resolve("california", seed=seed, data_home=str(california_home))
    found = _train(config, datasets.california(str(california_home)))
    assert found["sigmoid"]["vanishing"].severity == "error"
    assert found["sigmoid"]["vanishing"].evidence["first_last_ratio"] < 1e-4
    relu = found["relu"]
    assert set(relu) <= {"dead_units", "vanishing"}
    if seed == 2:  # starts at first/last 0.052, just inside e^-3 (theory: 0.044 x/ 2.4 by chance)
        assert "vanishing" not in relu
        return
    v = relu["vanishing"]
    assert (v.severity, v.steps[0]) == ("info", 0)
    assert v.evidence["first_last_ratio"] < 0.05 and 0.3 < v.evidence["per_layer_factor"] < 0.9
    assert v.evidence["level_by_step"] > 0 and v.evidence["first_last_ratio_at_last_step"] > 0.05
    assert "weight gradients stay level" in v.summary and "ordered phase" in v.summary
    assert v.remedies[0].name == "he_init"
