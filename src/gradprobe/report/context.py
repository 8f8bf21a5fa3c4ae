"""Everything the report template shows, computed from a run: plain dicts, lists and strings.

The template only lays it out; every string from the run reaches the page through Jinja2's
autoescaping (charts are SVG written by matplotlib, which escapes its text).
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from gradprobe.diagnosis import Finding, Thresholds, diagnose, verdict
from gradprobe.diagnosis.view import VariantRecords, split
from gradprobe.report import charts
from gradprobe.run import Run

SEVERITY_OF_VERDICT = {"error": "error", "warning": "warning"}


def fmt(v: Any) -> str:
    """A value for a table cell or an evidence line."""
    if isinstance(v, bool) or v is None:
        return "-" if v is None else str(v)
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.3g}"
    if isinstance(v, (list, tuple)):
        items = [fmt(x) for x in v[:12]]
        return "[" + ", ".join(items) + (", ..." if len(v) > 12 else "") + "]"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {fmt(x)}" for k, x in list(v.items())[:12])
    return str(v)


def _finding(f: Finding) -> dict[str, Any]:
    return {
        "code": f.code,
        "severity": f.severity,
        "summary": f.summary,
        "explanation": f.explanation,
        "layers": ", ".join(f.layers) or "-",
        "steps": fmt(list(f.steps)) if f.steps else "all recorded",
        "evidence": [(k.replace("_", " "), fmt(v)) for k, v in f.evidence.items()],
        "remedies": [{"name": r.name.replace("_", " "), "why": r.why} for r in f.remedies],
    }


def _worst(findings: list[Finding]) -> str:
    return min(findings, key=lambda f: f.rank).severity if findings else "ok"


def _epoch_of(run: Run, variant: str) -> dict[int, int]:
    steps = run.table("steps")
    if steps.empty or "epoch" not in steps:
        return {}
    s = steps[steps["variant"] == variant]
    return dict(zip(s["step"].astype(int), s["epoch"].astype(int), strict=False))


def _layer_table(rec: VariantRecords) -> list[dict[str, str]]:
    if rec.steps.size == 0:
        return []
    first = int(rec.steps[0])
    w = rec.weights[rec.weights["step"] == first]
    lay = rec.layers[rec.layers["step"] == first]
    cols = ["layer", "depth", "grad_norm", "pe_grad_rms", "update_ratio"]
    merged = w[cols].merge(lay, on=["layer", "depth"], how="outer").sort_values("depth")
    keys = (
        "grad_norm",
        "pe_grad_rms",
        "backward_norm",
        "act_rms",
        "saturated_frac",
        "dead_frac",
        "update_ratio",
    )
    return [
        {
            "layer": str(r["layer"]),
            "kind": str(r.get("kind", "") or ""),
            "activation": str(r.get("activation", "") or ""),
        }
        | {k: fmt(r.get(k)) for k in keys}
        for r in merged.to_dict("records")
    ]


def _theory(run: Run, rec: VariantRecords) -> dict[str, Any] | None:
    """Mean-field prediction beside the first recorded step, for the run's MLP variants.

    The widths, activation, initialisation and the inputs' second moment come from the run's
    config (see :func:`gradprobe.views.plots.theory_prediction`).
    """
    from gradprobe.views.plots import theory_prediction

    if rec.steps.size == 0:
        return None
    p = theory_prediction(run, rec.variant)
    if p is None:
        return None
    widths = list(p.widths)
    first = int(rec.steps[0])
    measured = {}
    for key, column in (("weight", "pe_grad_rms"), ("backward", "backward_norm")):
        grid = rec.grid(column).dropna(axis=1, how="all")
        if first in grid.index and grid.shape[1] == len(widths) - 1:
            measured[key] = charts.relative(grid.loc[first].to_numpy())
    predicted = {"weight": p.grad_norm_by_depth, "backward": p.delta_norm_by_depth}
    fig = charts.theory_vs_measured(measured, predicted, p.grad_norm_band)
    return {
        "error": None,
        "svg": charts.svg(fig),
        "message": p.verdict.message,
        "widths": fmt(widths),
        "chi1": fmt(p.chi1),
        "kind": p.verdict.kind,
        "measured_first_last": fmt(measured.get("weight", [math.nan])[0]),
        "predicted_first_last": fmt(p.first_to_last),
        "notes": list(p.notes),
    }


def _charts(run: Run, rec: VariantRecords, th: Thresholds) -> list[dict[str, str]]:
    epoch_of = _epoch_of(run, rec.variant)
    out = []
    g = rec.grid("grad_norm")
    if not g.empty:
        out.append(
            (
                "Weight-gradient norm by depth, one line per epoch",
                "||dL/dW|| of each layer at the first recorded step of every epoch; log scale.",
                charts.by_depth_per_epoch(g, epoch_of, "||dL/dW|| (log)"),
            )
        )
    b = rec.grid("backward_norm").dropna(axis=1, how="all")
    if not b.empty:
        out.append(
            (
                "Backward signal by depth, one line per epoch",
                "||dL/dh|| at each layer's output: what backprop hands to the layer below. "
                "Flat weight gradients can hide a fading backward signal.",
                charts.by_depth_per_epoch(b, epoch_of, "||dL/dh|| (log)"),
            )
        )
    if not g.empty:
        from gradprobe.views.plots import heatmap

        out.append(
            (
                "Gradient norm, layer x step",
                "Every recorded step; log colour scale.",
                heatmap(rec.params, ""),
            )
        )
    out.append(
        (
            "Activation health: saturated and dead fractions",
            "Share of sigmoid/tanh outputs on the flat tails, and of ReLU units silent for the "
            "whole batch; dotted lines: the diagnosis thresholds.",
            charts.activation_health(
                rec.grid("saturated_frac"), rec.grid("dead_frac"), (th.saturated_high, th.dead_high)
            ),
        )
    )
    u = rec.grid("update_ratio")
    if not u.dropna(how="all").empty:
        out.append(
            (
                "Update / weight ratio by layer",
                "||W_after - W_before|| / ||W|| per step: about 1e-3 trains steadily.",
                charts.update_ratios(u, th.stall_ratio, th.update_high),
            )
        )
    return [{"title": t, "caption": c, "svg": charts.svg(f)} for t, c, f in out]


def _model_line(run: Run, variant: str) -> str:
    for v in run.config.get("variants", []):
        if v.get("name") == variant:
            m = v["model"]
            return (
                f"{m['depth']} x Dense({m['width']}, {m['activation']}) + Dense(1, "
                f"{m.get('output_activation', 'linear')}), init {m['init']}"
            )
    return ""


def _comparison(run: Run, recs: list[VariantRecords], findings: list[Finding]) -> dict[str, Any]:
    summary = {v["name"]: v for v in run.summary.get("variants", [])}
    rows = []
    for rec in recs:
        s = summary.get(rec.variant, {})
        first = int(rec.steps[0]) if rec.steps.size else -1
        from gradprobe.diagnosis.flow import step_ratio

        rows.append(
            {
                "variant": rec.variant,
                "verdict": verdict(findings, rec.variant),
                "severity": _worst([f for f in findings if f.variant == rec.variant]),
                "weight_ratio": fmt(step_ratio(rec, "grad_norm", first)),
                "pe_ratio": fmt(step_ratio(rec, "pe_grad_rms", first)),
                "backward_ratio": fmt(step_ratio(rec, "backward_norm", first)),
                "final_loss": fmt(s.get("final_loss")),
                "test": fmt(s.get("test_accuracy", s.get("test_loss"))),
            }
        )
    svg = None
    params, layers = run.table("params"), run.table("layers")
    if len(recs) > 1 and not params.empty:
        from gradprobe.views.plots import variants_chart

        svg = charts.svg(variants_chart(params, layers, "", [r.variant for r in recs]))
    return {"rows": rows, "svg": svg}


def build(run: Run, now: datetime, thresholds: Thresholds | None = None) -> dict[str, Any]:
    """The template's context for ``run``, stamped ``now``."""
    th = thresholds or Thresholds()
    recs = [r for r in split(run) if not r.params.empty or not r.layers.empty]
    findings = diagnose(run, thresholds=th)
    variants = []
    for rec in recs:
        mine = [f for f in findings if f.variant == rec.variant]
        variants.append(
            {
                "name": rec.variant,
                "model": _model_line(run, rec.variant),
                "verdict": verdict(mine),
                "severity": _worst(mine),
                "findings": [_finding(f) for f in mine],
                "charts": _charts(run, rec, th),
                "table": _layer_table(rec),
                "theory": _theory(run, rec),
            }
        )
    config = {k: v for k, v in run.config.items() if k != "environment"}
    return {
        "experiment": str(run.config.get("experiment", "run")),
        "run_path": str(run.path),
        "generated": now.isoformat(timespec="seconds"),
        "status": str(run.status.get("status", "unknown")),
        "message": str(run.status.get("message", "")),
        "partial": run.partial,
        "overall": _worst(findings),
        "variants": variants,
        "comparison": _comparison(run, recs, findings),
        "config_json": json.dumps(config, indent=2, default=str),
        "environment": [(str(k), fmt(v)) for k, v in run.config.get("environment", {}).items()],
        "thresholds": [(k, fmt(v)) for k, v in vars(th).items()],
        "empty": not recs,
    }
