"""``saturation`` and ``dead_units``: activations that pass (almost) no gradient."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradprobe.diagnosis import flow
from gradprobe.diagnosis import remedies as R
from gradprobe.diagnosis.finding import ERROR, WARNING, Finding
from gradprobe.diagnosis.rules.base import fmt
from gradprobe.diagnosis.thresholds import Thresholds
from gradprobe.diagnosis.view import VariantRecords

SLOPE_LIMIT = 0.01  # saturated: the derivative under this share of its maximum (gradprobe.stats)


def _persistent_layers(  # noqa: D103 - layers where ``column`` > ``limit`` persistently
    rec: VariantRecords, column: str, limit: float, th: Thresholds
) -> tuple[pd.DataFrame, list[int]]:
    grid = rec.grid(column)
    if grid.empty:
        return grid, []
    finite = np.isfinite(rec.grid("act_rms").reindex_like(grid).to_numpy(dtype=float))
    grid = grid.where(finite).dropna(axis=1, how="all")  # NaN outputs are neither dead nor alive
    hits = [d for d in grid.columns if flow.persistent(grid[d].to_numpy() > limit, th.min_fraction)]
    return grid, hits


def _evidence(grid: pd.DataFrame, hits: list[int], rec: VariantRecords, name: str) -> dict:
    med = grid[hits].median()
    return {
        f"median_{name}_by_layer": {
            rec.names.get(int(d), str(d)): float(v) for d, v in med.items()
        },
        f"max_{name}": float(np.nanmax(grid[hits].to_numpy())),
        "steps_recorded": int(len(grid)),
        "layers_flagged": len(hits),
    }


def saturation(rec: VariantRecords, th: Thresholds) -> list[Finding]:
    """sigmoid/tanh layers whose outputs sit where the derivative is under 1% of its maximum."""
    grid, hits = _persistent_layers(rec, "saturated_frac", th.saturated_high, th)
    if not hits:
        return []
    ev = _evidence(grid, hits, rec, "saturated_frac")
    ev["threshold"] = th.saturated_high
    ev["slope_limit_of_max"] = SLOPE_LIMIT
    steps = grid.index[(grid[hits] > th.saturated_high).any(axis=1)]
    return [
        Finding(
            code="saturation",
            severity=WARNING,
            variant=rec.variant,
            layers=rec.layer_names(hits),
            depths=rec.numbers(hits),
            steps=tuple(int(s) for s in steps),
            evidence=ev,
            summary=(
                f"up to {fmt(100 * ev['max_saturated_frac'])}% of the "
                f"outputs of {len(hits)} layer(s) are on the flat tails (slope < "
                f"{fmt(100 * SLOPE_LIMIT)}% of max)"
            ),
            explanation=(
                "A sigmoid or tanh unit driven far from 0 has an almost flat slope there, so "
                "almost no gradient passes through it, and a saturated unit stays saturated. "
                "Large weights, large inputs or a large learning rate push units there."
            ),
            remedies=R.for_saturation(rec.activations),
        )
    ]


def dead_units(rec: VariantRecords, th: Thresholds) -> list[Finding]:
    """ReLU-family layers where many units output nothing for the whole batch."""
    grid, hits = _persistent_layers(rec, "dead_frac", th.dead_high, th)
    if not hits:
        return []
    ev = _evidence(grid, hits, rec, "dead_frac")
    ev["threshold"] = th.dead_high
    all_dead = ev["max_dead_frac"] >= 1.0
    steps = grid.index[(grid[hits] > th.dead_high).any(axis=1)]
    return [
        Finding(
            code="dead_units",
            severity=ERROR if all_dead else WARNING,
            variant=rec.variant,
            layers=rec.layer_names(hits),
            depths=rec.numbers(hits),
            steps=tuple(int(s) for s in steps),
            evidence=ev,
            summary=(
                f"up to {fmt(100 * ev['max_dead_frac'])}% of the units of "
                f"{len(hits)} layer(s) never fire on a batch"
                + (" -- a whole layer is silent, nothing below it learns" if all_dead else "")
            ),
            explanation=(
                "A ReLU unit whose pre-activation is negative for every example outputs 0 and "
                "gets gradient 0, so it cannot recover: the layer loses that capacity for good. "
                "A large negative bias, a large step or a poor init kills units."
            ),
            remedies=R.for_dead_units(),
        )
    ]
