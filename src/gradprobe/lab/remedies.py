"""Remedies tried and ranked by what they do to training.

The remedies are the catalogue's trials (:mod:`gradprobe.diagnosis.remedies`, the names
``diagnose`` prints); each is trained with the same budget and seeds as the baseline. The
ranking (:func:`rank_remedies`):

1. A remedy that diverges -- a non-finite loss, or a test loss more than :data:`FAIL_FACTOR`
   times the reference (the baseline's median, or the mean/prior predictor's loss if higher) in
   any seed -- is marked *failed*, ranked last, with its reason.
2. The others by outcome after training, median over seeds: test accuracy for classification,
   test loss for regression. Outcomes within the seeds' spread (or :data:`TIE_LOSS` relative,
   :data:`TIE_ACCURACY` absolute) of the tier's best count as a tie.
3. Within a tie, by gradient health during training: the diagnosis' findings score (2 per
   error, 1 per warning, mean over seeds), then how far the per-layer gradient factor over
   training is from 1.

Each rank carries a one-line ``reason``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any

import numpy as np
import pandas as pd

from gradprobe.diagnosis.remedies import CATALOGUE, TRIALS, canonical
from gradprobe.experiments.spec import ModelSpec, TrainSpec
from gradprobe.lab.spec import Cell, SweepSpec, record_every

REMEDIES: dict[str, tuple[dict[str, Any], str]] = {
    n: (dict(CATALOGUE[n].trial or {}), CATALOGUE[n].what) for n in TRIALS
}
"""name -> (configuration change, what it is): the remedies the lab can train."""
SEVERITY_WEIGHT = {"error": 2.0, "warning": 1.0}
FAIL_FACTOR = 3.0
TIE_LOSS = 0.05
TIE_ACCURACY = 0.02
LEARNT_NOTHING = 0.97  # a test loss above this share of the null predictor's learnt nothing


def apply(name: str, model: ModelSpec, train: TrainSpec) -> tuple[ModelSpec, TrainSpec]:
    """``model`` and ``train`` with remedy ``name`` (or an alias) applied."""
    over = dict(REMEDIES[canonical(name, trial=True)][0])
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
    spec: SweepSpec,
    model: ModelSpec,
    train: TrainSpec,
    data_id: Any,
    names: list[str],
    n_train: int | None = None,
) -> list[Cell]:
    """One cell per remedy, each with the spec's seeds (``n_train``: for ``every = auto``)."""
    cells = []
    for name in names:
        m, t = apply(name, model, dataclasses.replace(train, seed=0))
        m.validate()
        t.validate()
        ident = {"data": data_id, "model": dataclasses.asdict(m), "train": dataclasses.asdict(t)}
        every = record_every(spec, train, n_train)  # the baseline's: the same records for all
        ident.update(seeds=list(spec.seeds), every=every)
        key = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
        cells.append(Cell(key, (("remedy", name),), m, t, spec.seeds, every))
    return cells


def remedy_spec(spec: SweepSpec, names: list[str] | None = None) -> SweepSpec:
    """``spec`` turned into a remedies run (no axes; one cell per remedy). Aliases such as
    ``clip_gradients`` or ``normalisation`` are accepted and stored by their catalogue name."""
    chosen = tuple(dict.fromkeys(canonical(n, trial=True) for n in (names or REMEDIES)))
    return dataclasses.replace(spec, axes={}, remedies=chosen)


def health(findings: str) -> float:
    """Badness of one seed's findings: 2 per error, 1 per warning (0: healthy)."""
    items = [f.split(":", 1)[0] for f in str(findings).split(",") if f]
    return sum(SEVERITY_WEIGHT.get(s, 0.0) for s in items)


def null_loss(loss: str, y_train: np.ndarray, y_test: np.ndarray) -> float:
    """Test loss of the best constant prediction fitted on the training targets: the mean for
    ``mse``, the class rate for ``bce``, the class frequencies for ``ce``."""
    yt, ye = np.asarray(y_train, float).ravel(), np.asarray(y_test, float).ravel()
    if loss == "mse":
        return float(np.mean((ye - yt.mean()) ** 2))
    if loss == "bce":
        p = float(np.clip(yt.mean(), 1e-7, 1 - 1e-7))
        return float(-np.mean(ye * math.log(p) + (1 - ye) * math.log(1 - p)))
    classes, counts = np.unique(yt.astype(int), return_counts=True)
    freq = dict(zip(classes.tolist(), (counts / counts.sum()).tolist(), strict=True))
    return float(-np.mean([math.log(freq.get(int(c), 1e-7)) for c in ye]))


def _items(values: pd.Series) -> str:
    return ",".join(sorted(set(",".join(map(str, values)).split(",")) - {""}))


def _per_remedy(results: pd.DataFrame) -> pd.DataFrame:
    r = results.assign(health=results["findings"].map(health))
    ok = r[r["status"] != "error"]
    g = ok.groupby("remedy", sort=False)
    out = pd.DataFrame(
        {
            "test_loss": g["test_loss"].median(),
            "test_loss_min": g["test_loss"].min(),
            "test_loss_max": g["test_loss"].max(),
            "test_accuracy": g["test_accuracy"].median(),
            "test_accuracy_min": g["test_accuracy"].min(),
            "test_accuracy_max": g["test_accuracy"].max(),
            "health": g["health"].mean(),
            "ratio_median": g["first_last_ratio"].median(),
            "decay_per_layer": g["decay_per_layer"].median(),
            "decay_during": g["decay_during"].median() if "decay_during" in ok else np.nan,
            "seeds": g["seed"].count(),
            "findings": g["findings"].agg(_items),
        }
    )
    names = list(dict.fromkeys(r["remedy"]))
    return out.reindex(names).rename_axis("remedy").reset_index()


def _failure(rows: pd.DataFrame, limit: float | None, ref_text: str) -> str:
    """Why a remedy failed ('' if it did not): errors, non-finite losses, divergence."""
    n = len(rows)
    err = rows[rows["status"] == "error"]
    if len(err):
        return f"failed: could not train ({err['message'].iloc[0]})"
    bad = (rows["status"] == "non_finite") | ~np.isfinite(rows["test_loss"].astype(float))
    if bad.any():
        msg = rows.loc[bad, "message"].iloc[0] or "non-finite test loss"
        rest = rows.loc[~bad, "test_loss"]
        tail = f"; the other seeds reached test loss {rest.median():.3g}" if len(rest) else ""
        return f"failed: diverged in {int(bad.sum())} of {n} seeds ({msg}){tail}"
    if limit is not None:
        big = rows[rows["test_loss"] > limit]
        if len(big):
            worst = big.loc[big["test_loss"].idxmax()]
            start = float(worst.get("initial_loss", math.nan))
            rose = not (np.isfinite(start) and start >= worst["test_loss"] / 2)
            how = "diverged" if rose else "never came down"
            return (
                f"failed: {how} in {len(big)} of {n} seeds (test loss {worst['test_loss']:.3g}"
                + (f" from {start:.3g} at the start" if np.isfinite(start) else "")
                + f", over {FAIL_FACTOR:g}x {ref_text})"
            )
    return ""


def rank_remedies(
    results: pd.DataFrame, task: str | None = None, null: float | None = None
) -> pd.DataFrame:
    """One row per remedy, best first (see the module docstring), with ``status`` (ok or
    failed), ``reason``, median and range over seeds of the test loss and accuracy, the
    findings score, the step-0 first/last ratio and the per-layer factors at step 0 and during
    training. ``task``: ``regression`` ranks by test loss, anything else by accuracy (default:
    accuracy when the results have it); ``null``: the constant predictor's test loss."""
    if task is None:
        task = "regression" if results["test_accuracy"].isna().all() else "classification"
    by_acc = task != "regression"
    out = _per_remedy(results)
    base = out.loc[out["remedy"] == "baseline", "test_loss"]
    base_loss = float(base.iloc[0]) if len(base) and np.isfinite(base.iloc[0]) else None
    candidates = ((base_loss, "the baseline's"), (null, "the constant predictor's"))
    refs = [(float(v), t) for v, t in candidates if v is not None and np.isfinite(v)]
    ref = max(refs, key=lambda vt: vt[0]) if refs else None
    limit = FAIL_FACTOR * ref[0] if ref else None
    ref_text = f"{ref[1]} {ref[0]:.3g}" if ref else ""
    out["reason"] = [
        _failure(results[results["remedy"] == n], limit, ref_text) for n in out["remedy"]
    ]
    out["status"] = np.where(out["reason"] != "", "failed", "ok")
    good = out[out["status"] == "ok"].copy()
    metric = "test_accuracy" if by_acc else "test_loss"
    good["sort_key"] = -good[metric] if by_acc else good[metric]
    good["flow_off"] = (np.log10(good["decay_during"].astype(float).abs() + 1e-300)).abs()
    good = good.sort_values("sort_key", kind="stable", na_position="last")
    good["tier"] = _tiers(good, metric, by_acc)
    good = good.sort_values(["tier", "health", "flow_off"], kind="stable", na_position="last")
    good["reason"] = [_reason(r, good, by_acc, base_loss, null) for r in good.itertuples()]
    failed = out[out["status"] == "failed"]
    ranked = pd.concat([good.drop(columns=["sort_key", "flow_off", "tier"]), failed])
    ranked.insert(0, "rank", np.arange(1, len(ranked) + 1))
    ranked.insert(2, "what", ranked["remedy"].map(lambda n: REMEDIES[n][1]))
    return ranked.reset_index(drop=True)


def _tiers(good: pd.DataFrame, metric: str, by_acc: bool) -> list[int]:
    """Tier numbers of rows sorted best first: a row ties with the tier's best when their
    medians differ by less than the tolerance or half the larger seed range."""
    tiers, tier, lead = [], 0, None
    for r in good.itertuples():
        m, lo, hi = getattr(r, metric), getattr(r, metric + "_min"), getattr(r, metric + "_max")
        if lead is None or not np.isfinite(m):
            lead = (m, hi - lo) if lead is None else lead
        else:
            tol = TIE_ACCURACY if by_acc else TIE_LOSS * abs(lead[0])
            tol = max(tol, 0.5 * max(lead[1], hi - lo))
            if not abs(m - lead[0]) <= tol:
                tier, lead = tier + 1, (m, hi - lo)
        tiers.append(tier)
    return tiers


def _span(lo: float, hi: float) -> str:
    return f"{lo:.3g}" if f"{lo:.3g}" == f"{hi:.3g}" else f"{lo:.3g}-{hi:.3g}"


def _reason(
    r: Any, good: pd.DataFrame, by_acc: bool, base_loss: float | None, null: float | None
) -> str:
    """One line: the outcome with its spread and how it compares, then the gradient health."""
    if by_acc:
        bits = [
            f"test accuracy {r.test_accuracy:.3g} "
            f"({_span(r.test_accuracy_min, r.test_accuracy_max)} over {r.seeds} seeds)"
        ]
    else:
        bits = [
            f"test loss {r.test_loss:.3g} ({_span(r.test_loss_min, r.test_loss_max)} "
            f"over {r.seeds} seeds)"
        ]
        if null is not None and r.test_loss >= LEARNT_NOTHING * null:
            bits.append(f"learnt nothing (predicting the mean gives {null:.3g})")
        elif base_loss and r.remedy != "baseline":
            bits.append(f"{r.test_loss / base_loss:.2g}x the baseline's")
    mates = good[(good["tier"] == r.tier) & (good["remedy"] != r.remedy)]
    if len(mates):
        bits.append(f"tied on outcome with {', '.join(mates['remedy'][:3])}")
    flow = f"{r.decay_during:.2g}/layer" if np.isfinite(r.decay_during) else "-"
    if r.findings:
        bits.append(f"during training {r.findings.replace(',', ', ')} (gradient x{flow})")
    else:
        bits.append(f"no finding during training (gradient x{flow})")
    return "; ".join(bits)
