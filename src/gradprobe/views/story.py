"""The closing sentence of a run: what its gradients looked like and what training got, with the
measured numbers (nothing here is hard-coded: every figure comes from the run's tables).

Example (a California run)::

    California Housing, 5 epochs of SGD (lr 0.01, batch 32) on 16512 training rows, 1 seed:
    sigmoid's first layer gets 2.2e-08 of the last layer's gradient and its test loss ends at
    1.31, no better than the mean predictor's 1.31; relu's first layer gets 0.24 of it and relu
    trains to test loss 0.345 (from 5.5 before training).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from gradprobe.records import grad_norm_by_depth
from gradprobe.run import Run

LEARNED_NOTHING = 0.9
"""A regression variant whose test loss ends above this share of the mean predictor's learned
nothing the mean does not give."""

_OPTIMIZER = {"sgd": "SGD", "momentum": "SGD with momentum", "adam": "Adam", "adamw": "AdamW"}
_TITLES = {"california": "California Housing", "classification": "make_classification"}


@dataclass(frozen=True)
class VariantOutcome:
    """One variant's numbers for the sentence.

    ``ratio``: first / last layer weight-gradient norm at the first recorded step (watched seed).
    ``metric``: ``test loss`` or ``test accuracy``; ``start``: its value before training
    (watched seed); ``finals``: its value after the last epoch, per seed (watched seed first);
    ``stuck``: per seed, whether that is no better than a network that learned nothing.
    """

    name: str
    ratio: float
    metric: str
    start: float
    finals: tuple[float, ...]
    stuck: tuple[bool, ...]


def watched_epochs(run: Run) -> pd.DataFrame:
    """The per-epoch rows of the watched seed (the one whose gradients were recorded)."""
    epochs = run.table("epochs")
    if "seed" not in epochs or epochs.empty:
        return epochs
    seed = run.config.get("train", {}).get("seed", epochs["seed"].min())
    return epochs[epochs["seed"] == seed]


def final_by_seed(run: Run, variant: str) -> pd.DataFrame:
    """The last per-epoch row of every seed of ``variant`` (one row per seed)."""
    epochs = run.table("epochs")
    if epochs.empty or "variant" not in epochs:
        return epochs
    e = epochs[epochs["variant"] == variant]
    if "seed" not in e:
        return e.tail(1)
    return e.groupby("seed", sort=True).tail(1).sort_values("seed")


def _g(v: float) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.3g}"


def _ratio(v: float) -> str:
    return "-" if not math.isfinite(v) else f"{v:.2g}"


def outcomes(run: Run) -> list[VariantOutcome]:
    """Per variant: gradient ratio, the metric before and after training, per seed."""
    params, epochs = run.table("params"), run.table("epochs")
    data = run.config.get("data", {})
    accuracy = "test_accuracy" in epochs and epochs["test_accuracy"].notna().any()
    metric = "test_accuracy" if accuracy else "test_loss"
    watched = run.config.get("train", {}).get("seed", 0)
    out = []
    for name in run.variants:
        norms = grad_norm_by_depth(params[params["variant"] == name])
        ratio = float(norms[0] / norms[-1]) if len(norms) and norms[-1] > 0 else math.nan
        e = epochs[epochs["variant"] == name] if "variant" in epochs else epochs
        if e.empty or metric not in e:
            continue
        if "seed" not in e:
            e = e.assign(seed=watched)
        seeds = sorted(set(e["seed"]), key=lambda s: (s != watched, s))
        finals, stuck = [], []
        for s in seeds:
            f = e[e["seed"] == s].sort_values("epoch")
            v = float(f[metric].iloc[-1])
            finals.append(v)
            stuck.append(_learned_nothing(v, accuracy, data))
        w = e[e["seed"] == watched].sort_values("epoch")
        start = float(w[metric].iloc[0]) if len(w) and int(w["epoch"].iloc[0]) < 0 else math.nan
        label = metric.replace("_", " ")
        out.append(VariantOutcome(name, ratio, label, start, tuple(finals), tuple(stuck)))
    return out


def _learned_nothing(value: float, accuracy: bool, data: dict) -> bool:
    if not math.isfinite(value):
        return True
    if accuracy:
        p = data.get("chance_test_accuracy")
        n = data.get("n_test") or 1
        return p is not None and value <= p + 0.5 / n
    base = data.get("baseline_test_loss")
    return base is not None and value >= LEARNED_NOTHING * base


def _count(n: Any, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _setup(run: Run, n_seeds: int) -> str:
    c = run.config
    t, d = c.get("train", {}), c.get("data", {})
    exp = str(c.get("experiment", "run"))
    title = _TITLES.get(exp, exp)
    opt = _OPTIMIZER.get(t.get("optimizer", ""), t.get("optimizer", "?"))
    batch = t.get("batch_size") or "all rows"
    rows = d.get("rows_used", "?")
    seeds = _count(n_seeds, "seed")
    return (
        f"{title}, {_count(t.get('epochs', '?'), 'epoch')} of {opt} "
        f"(lr {_g(t.get('lr', math.nan))}, "
        f"batch {batch}) on {rows} training rows, {seeds}"
    )


def _clause(o: VariantOutcome, first: bool, data: dict) -> str:
    n = len(o.finals)
    k = sum(o.stuck)
    lo, hi = min(o.finals), max(o.finals)
    spread = ""
    if n > 1:
        spread = f" (all {n} seeds)" if _g(lo) == _g(hi) else f" ({_g(lo)}-{_g(hi)} over {n} seeds)"
    grad = (
        f"{o.name}'s first layer gets {_ratio(o.ratio)} of the last layer's gradient"
        if first
        else f"{o.name}'s first layer gets {_ratio(o.ratio)} of it"
    )
    accuracy = o.metric == "test accuracy"
    if accuracy:
        p = data.get("chance_test_accuracy", math.nan)
        nothing = f"always guessing one class ({_g(1 - p)} or {_g(p)})"
    else:
        nothing = f"the mean predictor's {_g(data.get('baseline_test_loss', math.nan))}"
    if k == n:
        median = _g(float(np.median(o.finals)))
        return f"{grad} and its {o.metric} ends at {median}{spread}, no better than {nothing}"
    if k:
        return (
            f"{grad} and its {o.metric} ends no better than {nothing} in {k} of {n} seeds "
            f"(final {_g(lo)}-{_g(hi)})"
        )
    start = f" (from {_g(o.start)} before training)" if math.isfinite(o.start) else ""
    return (
        f"{grad} and {o.name} trains to {o.metric} {_g(float(np.median(o.finals)))}"
        f"{spread if n > 1 else start}"
    )


def closing_sentence(run: Run) -> str:
    """One sentence with the run's numbers: per variant, the first/last layer gradient ratio at
    the first step and the outcome on the test split (over every seed), beside what a network
    that learned nothing scores. Empty when the run has no outcome yet."""
    outs = outcomes(run)
    if not outs:
        return ""
    data = run.config.get("data", {})
    n_seeds = max(len(o.finals) for o in outs)
    clauses = [_clause(o, i == 0, data) for i, o in enumerate(outs)]
    return f"{_setup(run, n_seeds)}: " + "; ".join(clauses) + "."
