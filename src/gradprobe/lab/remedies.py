"""The remedies catalogue: each one a change to the configuration, tried with seeds and ranked
by gradient health (the diagnosis' findings) and then by test loss.

A remedy's overrides name sweep keys (:mod:`gradprobe.lab.spec`); ``lr_factor`` scales the
base learning rate and ``depth_factor`` the depth (at least 1 layer).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import numpy as np
import pandas as pd

from gradprobe.errors import UnknownChoiceError
from gradprobe.experiments.spec import ModelSpec, TrainSpec
from gradprobe.lab.spec import Cell, SweepSpec

REMEDIES: dict[str, tuple[dict[str, Any], str]] = {
    "baseline": ({}, "the configuration as it is"),
    "relu_he": ({"activation": "relu", "init": "he_uniform"}, "ReLU with He initialisation"),
    "he_init": ({"init": "he_normal"}, "He initialisation, same activation"),
    "tanh": ({"activation": "tanh", "init": "glorot_uniform"}, "tanh (zero-centred)"),
    "leaky_relu": ({"activation": "leaky_relu", "init": "he_uniform"}, "LeakyReLU, He init"),
    "gelu": ({"activation": "gelu", "init": "he_uniform"}, "GELU, He init"),
    "selu": ({"activation": "selu", "init": "lecun_normal"}, "SELU with LeCun normal"),
    "batch_norm": ({"norm": "batch"}, "BatchNorm before each activation"),
    "layer_norm": ({"norm": "layer"}, "LayerNorm before each activation"),
    "residual": ({"residual": True, "residual_scale": 1.0}, "residual connections"),
    "residual_scaled": ({"residual": True, "residual_scale": 0.5}, "residual, branch x0.5"),
    "shallower": ({"depth_factor": 0.25}, "a quarter of the depth"),
    "adam": ({"optimizer": "adam", "lr": 0.001}, "Adam, lr 1e-3"),
    "clip": ({"clip": 1.0}, "gradient clipping at norm 1"),
    "lower_lr": ({"lr_factor": 0.1}, "learning rate / 10"),
}
SEVERITY_WEIGHT = {"error": 2.0, "warning": 1.0}


def apply(name: str, model: ModelSpec, train: TrainSpec) -> tuple[ModelSpec, TrainSpec]:
    """``model`` and ``train`` with remedy ``name`` applied."""
    if name not in REMEDIES:
        raise UnknownChoiceError("remedy", name, REMEDIES)
    over = dict(REMEDIES[name][0])
    if "depth_factor" in over:
        over["depth"] = max(1, round(model.depth * over.pop("depth_factor")))
    if "lr_factor" in over:
        over["lr"] = train.lr * over.pop("lr_factor")
    if "clip" in over:
        over["clip_norm"] = over.pop("clip")
    m_keys = {f.name for f in dataclasses.fields(ModelSpec)}
    m = dataclasses.replace(model, **{k: v for k, v in over.items() if k in m_keys})
    t = dataclasses.replace(train, **{k: v for k, v in over.items() if k not in m_keys})
    return m, t


def remedy_cells(
    spec: SweepSpec, model: ModelSpec, train: TrainSpec, data_id: Any, names: list[str]
) -> list[Cell]:
    """One cell per remedy, each with the spec's seeds."""
    cells = []
    for name in names:
        m, t = apply(name, model, dataclasses.replace(train, seed=0))
        m.validate()
        t.validate()
        ident = {"data": data_id, "model": dataclasses.asdict(m), "train": dataclasses.asdict(t)}
        ident.update(seeds=list(spec.seeds), every=spec.every)
        key = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
        cells.append(Cell(key, (("remedy", name),), m, t, spec.seeds, spec.every))
    return cells


def remedy_spec(spec: SweepSpec, names: list[str] | None = None) -> SweepSpec:
    """``spec`` turned into a remedies run (no axes; one cell per remedy)."""
    chosen = tuple(names or REMEDIES)
    for n in chosen:
        if n not in REMEDIES:
            raise UnknownChoiceError("remedy", n, REMEDIES)
    return dataclasses.replace(spec, axes={}, remedies=chosen)


def health(findings: str) -> float:
    """Badness of one seed's findings: 2 per error, 1 per warning (0: healthy)."""
    items = [f.split(":", 1)[0] for f in str(findings).split(",") if f]
    return sum(SEVERITY_WEIGHT.get(s, 0.0) for s in items)


def rank_remedies(results: pd.DataFrame) -> pd.DataFrame:
    """One row per remedy, best first: mean health score over seeds (lower is healthier),
    then mean test loss; with the median first/last ratio and the spread of the test loss."""
    r = results[results["status"] != "error"].copy()
    r["health"] = r["findings"].map(health)
    g = r.groupby("remedy", sort=False)
    out = pd.DataFrame(
        {
            "health": g["health"].mean(),
            "test_loss": g["test_loss"].mean(),
            "test_loss_std": g["test_loss"].std(ddof=0),
            "test_accuracy": g["test_accuracy"].mean(),
            "ratio_median": g["first_last_ratio"].median(),
            "seeds": g["seed"].count(),
            "findings": g["findings"].agg(
                lambda v: ",".join(sorted(set(",".join(v).split(",")) - {""}))
            ),
        }
    ).reset_index()
    out["what"] = out["remedy"].map(lambda n: REMEDIES[n][1])
    out = out.sort_values(["health", "test_loss"], na_position="last", kind="stable")
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    return out.reset_index(drop=True)
