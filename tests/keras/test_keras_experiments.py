"""gradprobe run --framework keras against --framework torch: same start, same first gradients."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras", reason="the keras extra is not installed")
pytest.importorskip("torch", reason="the comparison needs the torch extra too")

from gradprobe.experiments import keras_backend, torch_backend  # noqa: E402
from gradprobe.experiments.data import california, classification  # noqa: E402
from gradprobe.experiments.runner import run_experiment  # noqa: E402
from gradprobe.experiments.spec import EXPERIMENTS, resolve  # noqa: E402
from gradprobe.run import load_run  # noqa: E402


def _first_step(params):
    p = params[params["step"] == 0]
    return p.sort_values(["depth", "param"])[["depth", "param", "grad_norm"]]


def _compare(data, experiment, variant, **train):
    exp = EXPERIMENTS[experiment]
    spec = exp.variant(variant)
    tr = exp.train if not train else type(exp.train)(**{**exp.train.__dict__, **train})
    k = keras_backend.train(spec, data, tr)
    t = torch_backend.train(spec, data, tr)
    a, b = _first_step(k.monitor.to_pandas()), _first_step(t.monitor.to_pandas())
    assert list(a["depth"]) == list(b["depth"])
    np.testing.assert_allclose(a["grad_norm"], b["grad_norm"], rtol=1e-4)
    return k, t


@pytest.mark.parametrize("variant", ["deep-sigmoid", "deep-relu"])
def test_classification_first_step_gradients_agree(variant):
    k, t = _compare(classification(), "classification", variant, epochs=1)
    assert [r["step"] for r in k.steps] == [r["step"] for r in t.steps] == [0, 1, 2]
    np.testing.assert_allclose(
        [r["loss"] for r in k.steps], [r["loss"] for r in t.steps], rtol=1e-3
    )
    np.testing.assert_allclose(
        k.firstlayer[0]["true_mean_abs_grad"], t.firstlayer[0]["true_mean_abs_grad"], rtol=1e-4
    )
    assert k.status == "complete" and len(k.epochs) == 1


@pytest.mark.slow
@pytest.mark.california
def test_california_first_step_gradients_agree(california_home):
    k, t = _compare(
        california(california_home), "california", "sigmoid", epochs=2, rows=512, batch_size=0
    )
    np.testing.assert_allclose(
        [r["loss"] for r in k.steps], [r["loss"] for r in t.steps], rtol=1e-4
    )


@pytest.mark.slow
def test_cli_run_keras_writes_a_loadable_run(tmp_path):
    config = resolve(
        "classification", variant="shallow-sigmoid", framework="keras", every=2, epochs=1
    )
    outcome = run_experiment(config, tmp_path / "run")
    run = load_run(tmp_path / "run")
    assert outcome.status == "complete"
    assert sorted(run.table("params")["step"].unique()) == [0, 2]
    assert len(run.table("steps")) == 3 and len(run.table("firstlayer")) == 3


def test_unsupported_options_fail_clearly():
    import dataclasses

    from gradprobe.errors import UsageError

    exp = EXPERIMENTS["classification"]
    spec = exp.variant("deep-sigmoid")
    normed = dataclasses.replace(spec, model=dataclasses.replace(spec.model, norm="batch"))
    with pytest.raises(UsageError, match="--norm"):
        keras_backend.train(normed, classification(), exp.train)
    clipped = dataclasses.replace(exp.train, clip_norm=1.0)
    with pytest.raises(UsageError, match="--clip-norm"):
        keras_backend.train(spec, classification(), clipped)
