"""Batched seeds agree with training each seed alone (the monitor's records included)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from gradprobe.experiments import data as D
from gradprobe.experiments import torch_backend as tb
from gradprobe.experiments.spec import EXPERIMENTS, ModelSpec, TrainSpec, Variant
from gradprobe.lab.batched import train_seeds

EXP = EXPERIMENTS["classification"]
ONE_EPOCH = dataclasses.replace(EXP.train, epochs=1)  # the cases as written: float drift grows
DEEP = EXP.variant("deep-sigmoid").model
RELU = EXP.variant("deep-relu-8").model

CASES = {
    "deep-sigmoid-adam": (DEEP, ONE_EPOCH, [0, 1, 2]),
    "residual-relu-rmsprop-clip-2epochs": (
        dataclasses.replace(RELU, residual=True, residual_scale=0.5),
        dataclasses.replace(ONE_EPOCH, clip_norm=0.5, optimizer="rmsprop", epochs=2),
        [3, 4],
    ),
    "tanh-he-momentum-batch10": (
        dataclasses.replace(DEEP, activation="tanh", init="he_normal"),
        dataclasses.replace(ONE_EPOCH, optimizer="momentum", batch_size=10),
        [5],
    ),
}


def _sorted(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    keys = ["step", "depth"] + (["param"] if table == "params" else [])
    return frame.sort_values(keys).reset_index(drop=True)


def _atol(col: str, reference: pd.DataFrame) -> float:
    # means and stds of nearly constant outputs cancel; the monitor sums in float32
    if col == "grad_mean":
        return 1e-3 * float(np.nanmax(np.abs(reference["grad_rms"])))
    return 5e-4 if col == "act_std" else 1e-12


def assert_same_as_alone(spec: ModelSpec, train: TrainSpec, seeds: list[int], data) -> None:  # type: ignore[no-untyped-def]
    res = train_seeds(spec, data, train, seeds)
    for s in seeds:
        alone = tb.train(Variant("v", spec), data, dataclasses.replace(train, seed=s))
        assert res.status[s] == alone.status
        steps = res.steps[res.steps["seed"] == s]
        np.testing.assert_allclose(steps["loss"], pd.DataFrame(alone.steps)["loss"], rtol=1e-5)
        ep, ref = res.epochs[res.epochs["seed"] == s], pd.DataFrame(alone.epochs)
        for c in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
            np.testing.assert_allclose(ep[c].to_numpy(), ref[c].to_numpy(), rtol=1e-5, err_msg=c)
        for table, got in (("params", res.params), ("layers", res.layers)):
            want = _sorted(alone.monitor.to_pandas(table), table)
            got = _sorted(got[got["seed"] == s].drop(columns="seed"), table)
            assert list(got.columns) == list(want.columns)
            for c in want.columns:
                if want[c].dtype.kind in "fi":
                    np.testing.assert_allclose(
                        got[c].to_numpy(float),
                        want[c].to_numpy(float),
                        rtol=2e-4,
                        atol=_atol(c, want),
                        err_msg=f"{table}.{c}",
                    )
                else:
                    assert got[c].tolist() == want[c].tolist(), (table, c)


@pytest.mark.parametrize("case", CASES)
def test_batched_seeds_equal_each_seed_alone(case):
    spec, train, seeds = CASES[case]
    assert_same_as_alone(spec, train, seeds, D.classification())


def test_batched_multiclass_cross_entropy_equals_alone():
    data = D.sklearn_dataset("wine")
    spec = ModelSpec(depth=3, width=8, activation="gelu", outputs=3)
    train = TrainSpec(optimizer="adamw", lr=0.01, epochs=2, loss="ce", batch_size=32)
    assert_same_as_alone(spec, train, [0, 1], data)


def test_a_seed_that_diverges_stops_alone_and_the_others_go_on():
    data = D.classification()
    spec = dataclasses.replace(RELU, init="he_uniform", output_activation="linear")
    train = TrainSpec(optimizer="sgd", lr=0.5, epochs=3, loss="mse", batch_size=8)
    res = train_seeds(spec, data, train, [0, 1, 2])
    alone = {
        s: tb.train(Variant("v", spec), data, dataclasses.replace(train, seed=s)) for s in (0, 1, 2)
    }
    for s in (0, 1, 2):
        assert res.status[s] == alone[s].status
        assert (res.steps["seed"] == s).sum() == len(alone[s].steps)
    assert "non_finite" in res.status.values()
