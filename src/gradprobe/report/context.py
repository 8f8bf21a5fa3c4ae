"""Everything the report template shows, computed from a run: plain dicts, lists and strings.

The template only lays it out; every string from the run reaches the page through Jinja2's
autoescaping. Charts are the run's figures (:func:`gradprobe.views.plots.run_figures`), each
rendered once to PNG -- the same bytes ``plots/`` holds -- and embedded as ``data:`` URIs.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from gradprobe.diagnosis import Finding, Thresholds, diagnose, verdict
from gradprobe.diagnosis.view import VariantRecords, split
from gradprobe.run import Run, variant_dir
from gradprobe.views.story import closing_sentence, final_by_seed, outcomes

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
        "layers": f.where or "-",
        "steps": fmt(list(f.steps)) if f.steps else "all recorded",
        "evidence": [(k.replace("_", " "), fmt(v)) for k, v in f.evidence.items()],
        "remedies": [{"name": r.name.replace("_", " "), "why": r.why} for r in f.remedies],
    }


def _worst(findings: list[Finding]) -> str:
    return min(findings, key=lambda f: f.rank).severity if findings else "ok"


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
            "layer": str(rec.numbers([r["depth"]])[0]),
            "module": str(r["layer"]),
            "kind": str(r.get("kind", "") or ""),
            "activation": str(r.get("activation", "") or ""),
        }
        | {k: fmt(r.get(k)) for k in keys}
        for r in merged.to_dict("records")
    ]


def _theory(
    run: Run, rec: VariantRecords, findings: list[Finding] | None = None
) -> dict[str, Any] | None:
    """The mean-field prediction's verdict beside the first recorded step (the chart is the
    run's ``theory.png``, all variants in one), and what the diagnosis of the whole run says of
    the same phenomenon (``findings``: this variant's), in the same words."""
    from gradprobe.views.plots import measured_per_example, theory_prediction

    if rec.steps.size == 0:
        return None
    p = theory_prediction(run, rec.variant)
    if p is None:
        return None
    measured = measured_per_example(rec.params)
    return {
        "message": p.verdict.message,
        "widths": fmt(list(p.widths)),
        "chi1": fmt(p.chi1),
        "kind": p.verdict.kind,
        "measured_first_last": fmt(float(measured[0]) if len(measured) else math.nan),
        "predicted_first_last": fmt(p.first_to_last),
        "notes": [*p.notes, *_measured_notes(p.verdict, findings or [])],
    }


def _measured_notes(v: Any, findings: list[Finding]) -> list[str]:
    """One sentence on what the run showed of the gradient flow the theory speaks of."""
    code = {"vanishing": "vanishing", "exploding": "exploding"}.get(v.kind)
    seen = [f for f in findings if f.code in ("vanishing", "exploding")]
    if seen:
        f = seen[0]
        return [f"Measured in this run ({f.code}, {f.severity}): {f.summary}."]
    if code:
        return [
            f"Measured in this run: no {code} finding -- the recorded gradients stayed within "
            "the diagnosis thresholds on enough steps."
        ]
    return []


_CAPTIONS = {
    "training.png": (
        "Outcome on the test split",
        "After every epoch (0: before training); bold: the seed whose gradients are recorded, "
        "thin: the other seeds; dotted: what a network that learned nothing scores.",
    ),
    "variants.png": (
        "Weight gradients at the first step",
        "||dL/dW|| of each layer, every variant, before any update: the notebooks' view.",
    ),
    "backward.png": (
        "Backward signal at the first step",
        "||dL/dh|| at each layer's output: what backprop hands to the layer below. Flat weight "
        "gradients can hide a fading backward signal.",
    ),
    "theory.png": (
        "Theory beside measurement",
        "Mean-field prediction at initialisation (lines, with the seed-to-seed band) against "
        "the measured per-example gradients (dots), each relative to the last layer.",
    ),
    "first-layer.png": (
        "The first layer's true gradient vs the notebook's estimate",
        "Under Adam each step moves a weight by about lr whatever the gradient's size, so the "
        "estimate (W0 - Wt)/lr counts steps while true gradients differ by orders of magnitude.",
    ),
    "activations.png": (
        "Saturated and dead units",
        "Share of sigmoid/tanh outputs on the flat tails and of ReLU units silent for the whole "
        "batch, first recorded step (solid) and last (dashed); dotted: the diagnosis thresholds.",
    ),
    "updates.png": (
        "Update size by layer",
        "||W_after - W_before|| / ||W||, median over recorded steps; about 1e-3 trains steadily.",
    ),
}


def _src(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _chart(figures: Mapping[str, bytes], name: str, title: str, caption: str) -> dict[str, str]:
    return {"title": title, "caption": caption, "src": _src(figures[name]), "file": name}


def _run_charts(figures: Mapping[str, bytes], names: tuple[str, ...]) -> list[dict[str, str]]:
    return [_chart(figures, n, *_CAPTIONS[n]) for n in names if n in figures]


def _variant_charts(figures: Mapping[str, bytes], variant: str) -> list[dict[str, str]]:
    slug = variant_dir(variant)
    pairs = (
        (
            f"epochs-{slug}.png",
            "Weight gradients by depth, per epoch",
            "||dL/dW|| of each layer at the first recorded step of an epoch (at most six "
            "epochs shown); log scale.",
        ),
        (
            f"heatmap-{slug}.png",
            "Weight gradients, layer x step",
            "Every recorded step; log colour scale.",
        ),
    )
    return [_chart(figures, n, t, c) for n, t, c in pairs if n in figures]


def _outcome_rows(run: Run) -> list[dict[str, Any]]:
    rows = []
    for o in outcomes(run):
        finals = final_by_seed(run, o.name)
        rows.append(
            {
                "variant": o.name,
                "metric": o.metric,
                "start": fmt(o.start),
                "median": fmt(float(sorted(o.finals)[len(o.finals) // 2])),
                "range": f"{fmt(min(o.finals))}-{fmt(max(o.finals))}",
                "seeds": len(finals) or 1,
                "stuck": f"{sum(o.stuck)} of {len(o.stuck)}",
            }
        )
    return rows


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
    return {"rows": rows}


def build(
    run: Run,
    now: datetime,
    thresholds: Thresholds | None = None,
    figures: Mapping[str, bytes] | None = None,
    findings: list[Finding] | None = None,
) -> dict[str, Any]:
    """The template's context for ``run``, stamped ``now``; ``figures`` are the run's PNGs by
    file name (rendered here when not given), ``findings`` its diagnosis under ``thresholds``
    (computed here when not given)."""
    from gradprobe.views.plots import render_run_figures

    th = thresholds or Thresholds()
    recs = [r for r in split(run) if not r.params.empty or not r.layers.empty]
    figures = figures if figures is not None else render_run_figures(run, th)
    findings = findings if findings is not None else diagnose(run, thresholds=th)
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
                "charts": _variant_charts(figures, rec.variant),
                "table": _layer_table(rec),
                "theory": _theory(run, rec, mine),
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
        "story": closing_sentence(run) if recs else "",
        "variants": variants,
        "outcome": {
            "rows": _outcome_rows(run) if recs else [],
            "charts": _run_charts(figures, ("training.png",)),
        },
        "comparison": _comparison(run, recs, findings),
        "step0_charts": _run_charts(
            figures, ("variants.png", "backward.png", "theory.png", "first-layer.png")
        ),
        "health_charts": _run_charts(figures, ("activations.png", "updates.png")),
        "config_json": json.dumps(config, indent=2, default=str),
        "environment": [(str(k), fmt(v)) for k, v in run.config.get("environment", {}).items()],
        "thresholds": [(k, fmt(v)) for k, v in vars(th).items()],
        "empty": not recs,
    }
