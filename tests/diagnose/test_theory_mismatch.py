"""theory_mismatch: quiet where the network is what its config says, loud where it is not."""

from __future__ import annotations

import json

import pytest

import gradprobe
from gradprobe.experiments.runner import run_experiment
from gradprobe.experiments.spec import resolve
from gradprobe.run import load_run


@pytest.fixture(scope="module")
def classification_runs(tmp_path_factory):
    runs = []
    for seed in range(3):
        out = tmp_path_factory.mktemp(f"cls{seed}")
        # width 64: narrow nets stray from theory by chance by up to x87 (beta = 1 at width 8)
        run_experiment(resolve("classification", seed=seed, width=64), out)
        runs.append(out)
    return runs


def test_no_departure_when_the_network_is_what_its_config_says(classification_runs):
    for path in classification_runs:
        codes = {f.code for f in gradprobe.diagnose(load_run(path))}
        assert "theory_mismatch" not in codes, path


def test_a_network_that_is_not_what_its_config_says_is_flagged(classification_runs):
    path = classification_runs[0]
    config = json.loads((path / "config.json").read_text())
    for v in config["variants"]:
        if v["name"].startswith("deep-sigmoid"):
            v["model"]["init"] = "torch_default"  # the weights were drawn Glorot-uniform
    (path / "config.json").write_text(json.dumps(config))
    found = [f for f in gradprobe.diagnose(load_run(path)) if f.code == "theory_mismatch"]
    assert [f.variant for f in found] == ["deep-sigmoid[width=64]"]
    f = found[0]
    assert f.severity == "warning" and f.steps == (0,)
    assert f.evidence["factor"] > 10
    assert "departs from theory" in f.summary


@pytest.mark.california
def test_california_nets_match_theory(california_home, tmp_path):
    for seed in range(2):
        out = tmp_path / f"c{seed}"
        run_experiment(resolve("california", seed=seed, data_home=str(california_home)), out)
        codes = {f.code for f in gradprobe.diagnose(load_run(out))}
        assert "theory_mismatch" not in codes
