"""``vanishing`` and ``exploding``: the backward signal shrinks or grows steadily with depth.

A step counts when the first/last ratio r passes ``ratio_high`` (exploding) or ``ratio_warn``
(vanishing: past the trainable depth 6 xi), widened to the net's seed spread, and the per-layer
factor agrees (:mod:`gradprobe.diagnosis.flow`); the finding needs it on enough steps
(:func:`~gradprobe.diagnosis.flow.persistent`).

Severity, as the theory's verdict grades the same net: ``vanishing`` is an error when the weight
gradients themselves fall below ``ratio_low`` (the early layers cannot learn), a warning when
only the backward signal fades (ReLU with Glorot init: ||dL/dh|| x0.71 per layer while the
weight gradients stay level because the activations shrink too) or when the fall is milder.
A vanishing seen at the first recorded step (the net as initialised: what the theory's verdict
speaks of) that training then undoes is still reported, as information with the step by which
it was gone: a run that recovered is never called healthy beside a theory box that says
vanishing, nor given a warning its training does not bear out.
"""

from __future__ import annotations

import math
from typing import Any

from gradprobe.diagnosis import flow
from gradprobe.diagnosis import remedies as R
from gradprobe.diagnosis.finding import ERROR, INFO, WARNING, Finding
from gradprobe.diagnosis.rules.base import fmt
from gradprobe.diagnosis.thresholds import Thresholds
from gradprobe.diagnosis.view import VariantRecords
from gradprobe.theory.verdicts import RELU_FAMILY, phase


def _scan(rec: VariantRecords, th: Thresholds, high: bool) -> dict[str, Any] | None:
    key, grid = flow.measure(rec)
    trends = flow.trends(grid)
    if not trends:
        return None
    limit = flow.log_threshold(rec, key, th, high, warn=not high)
    hits = {s: t for s, t in trends.items() if flow.flagged(t, limit, th, high)}
    persists = flow.persistent([s in hits for s in trends], th.min_fraction)
    start = min(trends)
    if not persists and (high or start not in hits):
        return None
    if not persists:  # vanishing at the first recorded step only: training brought it level
        cleared = next(s for s in sorted(trends) if s not in hits)
        hits = {s: t for s, t in hits.items() if s < cleared}
    first = min(hits)
    norms = grid.loc[first].to_numpy(dtype=float)
    rel = norms / norms[-1] if norms[-1] > 0 else norms
    far = [d for d, r in zip(grid.columns, rel, strict=True) if (r > 10 if high else r < 0.1)]
    ev_more: dict[str, Any] = {}
    if not persists:
        last = max(trends)
        ev_more = {
            "level_by_step": cleared,
            "first_last_ratio_then": trends[cleared].ratio,
            "first_last_ratio_at_last_step": trends[last].ratio,
            "last_step": last,
        }
    return {
        "key": key,
        "first": first,
        "persists": persists,
        "hits": hits,
        "layers": rec.layer_names(far if far else grid.columns),
        "depths": rec.numbers(far if far else grid.columns),
        "evidence": {
            "measure": flow.MEASURES[key][1],
            "step": first,
            "first_last_ratio": hits[first].ratio,
            "per_layer_factor": hits[first].factor,
            "chi1_measured": hits[first].factor ** 2,
            "slope_log_norm_per_layer": hits[first].slope,
            "geomean_ratio_over_flagged_steps": flow.geomean([t.ratio for t in hits.values()]),
            "layers_compared": hits[first].layers,
            "threshold_ratio": math.exp(-limit) if not high else math.exp(limit),
            "steps_flagged": len(hits),
            "steps_recorded": len(trends),
            "norm_by_depth": [float(n) for n in norms],
            "weight_grad_ratio": flow.step_ratio(rec, "grad_norm", first),
            "per_example_grad_ratio": flow.step_ratio(rec, "pe_grad_rms", first),
            "backward_ratio": flow.step_ratio(rec, "backward_norm", first),
            **ev_more,
        },
    }


def _weights_vanish(ev: dict[str, Any], th: Thresholds) -> bool:
    pe, batch = ev["per_example_grad_ratio"], ev["weight_grad_ratio"]
    if not math.isnan(pe):
        return pe < th.ratio_low
    return not math.isnan(batch) and batch < th.batch_ratio_low


def _level(ev: dict[str, Any]) -> float:
    """The weight gradients' first/last ratio beside a fading backward signal."""
    pe = ev["per_example_grad_ratio"]
    return pe if not math.isnan(pe) else ev["weight_grad_ratio"]


def _phase(ev: dict[str, Any]) -> str:
    """The theory's phase words for the measured per-layer factor f: chi1 = f^2."""
    chi1 = ev["chi1_measured"]
    return f"{phase(chi1)} phase, measured chi1 = {fmt(chi1)}"


def _when(ev: dict[str, Any]) -> str:
    step = ev["step"]
    return "at initialisation (step 0)" if step == 0 else f"at the first recorded step ({step})"


def _summary(ev: dict[str, Any], backward_only: bool, at_start: bool) -> str:
    ratio, factor = fmt(ev["first_last_ratio"]), fmt(ev["per_layer_factor"])
    where = f"at the first layer is {ratio} x the last layer's (x{factor} per layer, {_phase(ev)})"
    level = _level(ev)
    stays = (
        f"; the weight gradients stay level (first/last {fmt(level)})"
        if backward_only and not math.isnan(level)
        else ""
    )
    if at_start:
        return (
            f"{_when(ev)} the {ev['measure']} {where}{stays}; training undid it by step "
            f"{ev['level_by_step']} (first/last {fmt(ev['first_last_ratio_then'])}, "
            f"{fmt(ev['first_last_ratio_at_last_step'])} at step {ev['last_step']})"
        )
    return (
        f"the {ev['measure']} {where} at step {ev['step']}, on {ev['steps_flagged']} of "
        f"{ev['steps_recorded']} recorded steps{stays}"
    )


BACKWARD_ONLY = (
    "The backward signal dL/dh fades towards the input, yet the weight gradients stay "
    "level only because the activations shrink through the net at the same rate "
    "(a weight gradient is the backward signal times the layer's input; theory.md 0.3). "
)


def _explanation(
    rec: VariantRecords,
    ev: dict[str, Any],
    weights_vanish: bool,
    backward_only: bool,
    at_start: bool,
) -> str:
    relu = any(a in RELU_FAMILY for a in rec.activations)
    he = "He initialisation (Var W = 2/fan_in) keeps it level from the start. " if relu else ""
    if at_start:
        head = BACKWARD_ONLY if backward_only else "The gradients fade towards the input. "
        return (
            f"{head}That was so {_when(ev)} only: training undid it within "
            f"{ev['level_by_step']} steps, so this run trained -- information, not a problem "
            f"here. A deeper net, or slower training, may not get out of it. {he}".strip()
        )
    if backward_only:
        return (
            BACKWARD_ONLY
            + "The net trains, with little margin: a few more layers and the early "
            f"ones stop learning. {he}".strip()
        )
    if not weights_vanish:
        return (
            "The gradients fade towards the input past the depth the net can train at "
            "(Schoenholz's 6 xi): the early layers learn more slowly than the last ones, "
            "not yet hopelessly."
        )
    acts = "/".join(rec.activations) or "these"
    return (
        f"Each layer passes back only a fraction of the gradient it receives ({acts} "
        "layers: the product of weight scale and activation slope is below 1), and the "
        "fractions multiply: the layers near the input barely learn while the last ones do."
    )


def vanishing(rec: VariantRecords, th: Thresholds) -> list[Finding]:
    """Gradients shrink layer after layer towards the input.

    Persistent: an error when the weight gradients vanish too, else a warning. Only at the
    first recorded step (the net as initialised) and undone by training: information."""
    scan = _scan(rec, th, high=False)
    if scan is None:
        return []
    ev = scan["evidence"]
    weights_vanish = _weights_vanish(ev, th)
    backward_only = scan["key"] == "backward" and not weights_vanish
    at_start = not scan["persists"]
    severity = INFO if at_start else ERROR if weights_vanish else WARNING
    why = _explanation(rec, ev, weights_vanish, backward_only, at_start)
    return [
        Finding(
            code="vanishing",
            severity=severity,
            variant=rec.variant,
            layers=scan["layers"],
            depths=scan["depths"],
            steps=tuple(sorted(scan["hits"])),
            evidence=ev,
            summary=_summary(ev, backward_only, at_start),
            explanation=why,
            remedies=R.for_vanishing(rec.activations, backward_only),
        )
    ]


def exploding(rec: VariantRecords, th: Thresholds) -> list[Finding]:
    """Gradients grow layer after layer towards the input."""
    scan = _scan(rec, th, high=True)
    if scan is None:
        return []
    ev = scan["evidence"]
    summary = (
        f"the {ev['measure']} at the first layer is {fmt(ev['first_last_ratio'])} x the last "
        f"layer's (x{fmt(ev['per_layer_factor'])} per layer towards the input, {_phase(ev)}) "
        f"at step {ev['step']}, on {ev['steps_flagged']} of {ev['steps_recorded']} recorded steps"
    )
    why = (
        "Each layer multiplies the gradient it passes back by more than 1 (weights too large "
        "for the activation), and the factors compound: the first layers get steps far too "
        "large for them while the last ones get reasonable ones; training turns unstable."
    )
    return [
        Finding(
            code="exploding",
            severity=ERROR,
            variant=rec.variant,
            layers=scan["layers"],
            depths=scan["depths"],
            steps=tuple(sorted(scan["hits"])),
            evidence=ev,
            summary=summary,
            explanation=why,
            remedies=R.for_exploding(rec.activations),
        )
    ]
