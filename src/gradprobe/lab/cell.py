"""Train one cell (all its seeds, batched or one by one) and summarise each seed in one row.

A result row: the cell's configuration, then per seed the first/last weight-gradient ratio and
the per-layer decay at the first recorded step and during training (median over the recorded
steps), the diagnosis' findings, final train/test loss and accuracy, and the wall time (a
batched cell's time is shared equally by its seeds).
"""

from __future__ import annotations

import dataclasses
import math
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from gradprobe.experiments.data import Dataset
from gradprobe.lab.spec import Cell

STATUSES = ("complete", "non_finite", "error")


@dataclass
class CellResult:
    """What a cell hands back: one row per seed, and per-seed tables with a ``seed`` column."""

    key: str
    rows: pd.DataFrame
    steps: pd.DataFrame
    params: pd.DataFrame
    layers: pd.DataFrame
    mode: str


def load_data(spec: Any) -> Dataset:
    """The Dataset of a :class:`~gradprobe.lab.spec.DataSpec`."""
    from gradprobe.experiments import data as D

    if spec.kind == "builtin":
        return D.california(spec.data_home) if spec.name == "california" else D.classification()
    if spec.kind == "sklearn":
        return D.sklearn_dataset(spec.name, dict(spec.params))
    return D.from_table(spec.name, spec.target, spec.task)


def run_cell(cell: Cell, data: Dataset, batched: bool) -> CellResult:
    """Train every seed of ``cell``; an exception becomes rows with status ``error``."""
    t0 = time.perf_counter()
    try:
        tables, status, message = (_batched if batched else _sequential)(cell, data)
    except Exception as exc:  # a cell that breaks must not stop the sweep
        reason = f"{type(exc).__name__}: {exc}"
        rows = [_row(cell, s, "error", reason, None, math.nan) for s in cell.seeds]
        e = pd.DataFrame()
        return CellResult(cell.key, pd.DataFrame(rows), e, e, e, mode="error")
    steps, epochs, params, layers = tables
    wall = (time.perf_counter() - t0) / len(cell.seeds)
    findings = _findings(params, layers)
    rows = []
    for s in cell.seeds:
        stats = _seed_stats(params, layers, epochs, s)
        stats["initial_loss"] = _initial_loss(steps, s)
        stats["findings"] = findings.get(s, "")
        stats["n_errors"] = stats["findings"].count("error:")
        rows.append(_row(cell, s, status[s], message[s], stats, wall))
    frame = pd.DataFrame(rows)
    return CellResult(
        cell.key, frame, steps, params, layers, "batched" if batched else "sequential"
    )


def _batched(cell: Cell, data: Dataset) -> tuple[Any, dict[int, str], dict[int, str]]:
    from gradprobe.lab.batched import train_seeds

    r = train_seeds(cell.model, data, cell.train, cell.seeds, every=cell.every)
    return (r.steps, r.epochs, r.params, r.layers), r.status, r.message


def _sequential(cell: Cell, data: Dataset) -> tuple[Any, dict[int, str], dict[int, str]]:
    from gradprobe.experiments.spec import Variant
    from gradprobe.experiments.torch_backend import train

    parts: dict[str, list[pd.DataFrame]] = {k: [] for k in ("steps", "epochs", "params", "layers")}
    status, message = {}, {}
    for s in cell.seeds:
        out = train(
            Variant(cell.label, cell.model),
            data,
            dataclasses.replace(cell.train, seed=s),
            every=cell.every,
        )
        status[s] = "complete" if out.status == "complete" else out.status
        message[s] = out.message
        parts["steps"].append(pd.DataFrame(out.steps, columns=["step", "epoch", "loss"]))
        parts["epochs"].append(pd.DataFrame(out.epochs))
        parts["params"].append(out.monitor.to_pandas("params"))
        parts["layers"].append(out.monitor.to_pandas("layers"))
        for k in parts:
            parts[k][-1].insert(0, "seed", s)
    tables = tuple(pd.concat(parts[k], ignore_index=True) for k in parts)
    return tables, status, message


def _row(
    cell: Cell, seed: int, status: str, message: str, stats: dict[str, Any] | None, wall: float
) -> dict[str, Any]:
    config = cell.config()
    extra = {k: v for k, v in cell.values if k not in config}  # e.g. the remedy's name
    row: dict[str, Any] = {"cell": cell.key, "label": cell.label, **extra, **config, "seed": seed}
    row.update(status=status, message=message)
    row.update(stats or _NO_STATS)
    row["wall_time_s"] = wall
    return row


_NO_STATS: dict[str, Any] = {
    "first_last_ratio": math.nan,
    "decay_per_layer": math.nan,
    "ratio_during": math.nan,
    "decay_during": math.nan,
    "grad_norm_by_depth": [],
    "findings": "",
    "n_errors": 0,
    "initial_loss": math.nan,
    "train_loss": math.nan,
    "test_loss": math.nan,
    "train_accuracy": math.nan,
    "test_accuracy": math.nan,
}


def _linear_weights(params: pd.DataFrame, layers: pd.DataFrame) -> pd.DataFrame:
    """The weight rows of the Linear layers (normalisation layers' scale vectors left out)."""
    lin = set(layers.loc[layers["kind"] == "Linear", "layer"]) if len(layers) else None
    w = params[params["param"] == "weight"]
    return w[w["layer"].isin(lin)] if lin else w


def linear_norms(params: pd.DataFrame, layers: pd.DataFrame) -> np.ndarray:
    """Weight-gradient norms of the Linear layers at the first recorded step, input to output
    (normalisation layers' scale vectors are left out)."""
    if params.empty:
        return np.array([])
    w = _linear_weights(params, layers)
    first = w[w["step"] == w["step"].min()].sort_values("depth")
    return first["grad_norm"].to_numpy(dtype=float)


def first_last(norms: np.ndarray) -> tuple[float, float]:
    """(first/last ratio, geometric-mean factor per layer = ratio^(1/(layers-1)))."""
    if len(norms) < 2 or not norms[-1] > 0 or not np.isfinite(norms).all():
        return math.nan, math.nan
    ratio = float(norms[0] / norms[-1])
    return ratio, (ratio ** (1.0 / (len(norms) - 1)) if ratio > 0 else 0.0)


def during_training(params: pd.DataFrame, layers: pd.DataFrame) -> tuple[float, float]:
    """(first/last ratio, per-layer factor) over training: the median over recorded steps of
    each step's ratio (a remedy that acts through the updates, such as Adam or a lower learning
    rate, changes these, not the step-0 numbers)."""
    if params.empty:
        return math.nan, math.nan
    w = _linear_weights(params, layers)
    by_step = w.pivot_table(index="step", columns="depth", values="grad_norm", aggfunc="first")
    if by_step.shape[1] < 2:
        return math.nan, math.nan
    first, last = by_step.iloc[:, 0].to_numpy(float), by_step.iloc[:, -1].to_numpy(float)
    ok = np.isfinite(first) & np.isfinite(last) & (last > 0)
    if not ok.any():
        return math.nan, math.nan
    ratio = float(np.median(first[ok] / last[ok]))
    return ratio, (ratio ** (1.0 / (by_step.shape[1] - 1)) if ratio > 0 else 0.0)


def _initial_loss(steps: pd.DataFrame, seed: int) -> float:
    """The training loss of the seed's first batch, before any update."""
    s = steps[steps["seed"] == seed] if len(steps) else steps
    return float(s.loc[s["step"].idxmin(), "loss"]) if len(s) else math.nan


def _seed_stats(
    params: pd.DataFrame, layers: pd.DataFrame, epochs: pd.DataFrame, seed: int
) -> dict[str, Any]:
    p = params[params["seed"] == seed]
    lay = layers[layers["seed"] == seed]
    norms = linear_norms(p, lay)
    ratio, decay = first_last(norms)
    out = {**_NO_STATS, "first_last_ratio": ratio, "decay_per_layer": decay}
    out["ratio_during"], out["decay_during"] = during_training(p, lay)
    out["grad_norm_by_depth"] = [float(v) for v in norms]
    e = epochs[epochs["seed"] == seed] if len(epochs) else epochs
    if len(e):
        last = e.iloc[-1]
        for c in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
            out[c] = float(last[c])
    return out


def _findings(params: pd.DataFrame, layers: pd.DataFrame) -> dict[int, str]:
    """seed -> 'severity:code' items of the diagnosis, comma-separated ('' when healthy)."""
    from gradprobe.diagnosis import diagnose

    if params.empty:
        return {}
    p = params.assign(variant=params["seed"].astype(str))
    lay = layers.assign(variant=layers["seed"].astype(str))
    out: dict[int, list[str]] = {}
    try:
        found = diagnose((p, lay))
    except Exception:  # pragma: no cover - a diagnosis bug must not lose the training
        return {int(s): "diagnose-failed:" + traceback.format_exc(limit=1) for s in p["seed"]}
    for f in found:
        out.setdefault(int(f.variant), []).append(f"{f.severity}:{f.code}")
    return {s: ",".join(dict.fromkeys(v)) for s, v in out.items()}
