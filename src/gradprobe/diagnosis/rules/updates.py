"""``stalled_layers`` and ``update_too_large``: the update/weight ratio ||dW|| / ||W|| per step.

About 1e-3 trains steadily (a weight changes by a thousandth of its size per step); far below,
the layer stays where it started; far above, each step rewrites it. Weights only (biases start at
0, where the ratio has no meaning). Steps with no gradient at all (``zero_gradients``) are left
out: a weight that got no gradient did not stall for want of a learning rate.
"""

from __future__ import annotations

import numpy as np

from gradprobe.diagnosis import flow
from gradprobe.diagnosis import remedies as R
from gradprobe.diagnosis.finding import WARNING, Finding
from gradprobe.diagnosis.rules.base import fmt
from gradprobe.diagnosis.thresholds import Thresholds
from gradprobe.diagnosis.view import VariantRecords


def _ratio_hits(rec: VariantRecords, th: Thresholds, low: bool) -> tuple[dict, list[int]]:
    if rec.multi_iteration_steps:
        return {}, []  # one LBFGS step is many iterations: the per-step bounds do not apply
    grid = rec.grid("update_ratio").drop(index=list(rec.zero_steps), errors="ignore")
    grid = grid.dropna(axis=1, how="all").dropna(axis=0, how="all")
    if grid.empty:
        return {}, []
    values = grid.to_numpy(dtype=float)
    mask = values < th.stall_ratio if low else values > th.update_high
    hits = [d for j, d in enumerate(grid.columns) if flow.persistent(mask[:, j], th.min_fraction)]
    med = {rec.names.get(int(d), str(d)): float(np.nanmedian(grid[d])) for d in hits}
    return {"median_update_ratio_by_layer": med, "steps_recorded": int(len(grid))}, hits


def stalled_layers(rec: VariantRecords, th: Thresholds) -> list[Finding]:
    """Layers whose weights move by less than ``stall_ratio`` of their size per step."""
    ev, hits = _ratio_hits(rec, th, low=True)
    if not hits:
        return []
    n_layers = rec.grid("update_ratio").shape[1]
    ev["threshold"] = th.stall_ratio
    ev["layers_stalled"], ev["layers_with_updates"] = len(hits), n_layers
    partial = len(hits) < n_layers
    lowest = min(ev["median_update_ratio_by_layer"].values())
    return [
        Finding(
            code="stalled_layers",
            severity=WARNING,
            variant=rec.variant,
            layers=rec.layer_names(hits),
            depths=rec.numbers(hits),
            steps=(),
            evidence=ev,
            summary=(
                f"{len(hits)} of {n_layers} layers change by less than "
                f"{fmt(th.stall_ratio)} of their size per step (median down to {fmt(lowest)})"
            ),
            explanation=(
                "These layers' weights hardly move, so they stay close to their random start. "
                + (
                    "Only some layers stall: their gradients are small compared with the "
                    "others' -- look for vanishing gradients."
                    if partial
                    else "Every layer stalls: the learning rate is too small for this model."
                )
            ),
            remedies=R.for_stalled(vanishing=partial),
        )
    ]


def update_too_large(rec: VariantRecords, th: Thresholds) -> list[Finding]:
    """Layers whose weights change by more than ``update_high`` of their size per step."""
    ev, hits = _ratio_hits(rec, th, low=False)
    if not hits:
        return []
    ev["threshold"] = th.update_high
    ev["layers_flagged"] = len(hits)
    highest = max(ev["median_update_ratio_by_layer"].values())
    return [
        Finding(
            code="update_too_large",
            severity=WARNING,
            variant=rec.variant,
            layers=rec.layer_names(hits),
            depths=rec.numbers(hits),
            steps=(),
            evidence=ev,
            summary=(
                f"{len(hits)} layer(s) change by more than "
                f"{fmt(th.update_high)} of their size per step (median up to {fmt(highest)})"
            ),
            explanation=(
                "Each step rewrites a large share of these weights, about 100x the ~1e-3 that "
                "trains steadily: the loss jumps around, units die or saturate, and training "
                "can diverge."
            ),
            remedies=R.for_update_too_large(),
        )
    ]
