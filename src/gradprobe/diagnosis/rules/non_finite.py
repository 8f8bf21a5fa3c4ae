"""``non_finite``: a gradient, weight norm or backward signal is NaN or infinite."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradprobe.diagnosis import remedies as R
from gradprobe.diagnosis.finding import ERROR, Finding
from gradprobe.diagnosis.thresholds import Thresholds
from gradprobe.diagnosis.view import VariantRecords


def _bad_params(p: pd.DataFrame) -> pd.DataFrame:
    cols = ["grad_norm", "weight_norm"]
    finite = np.isfinite(p[cols].to_numpy(dtype=float)).all(axis=1)
    return p[(p["grad_nonfinite"] > 0) | ~finite]


def _bad_layers(lay: pd.DataFrame) -> pd.DataFrame:
    cols = ["act_rms", "backward_norm"]
    v = lay[cols].to_numpy(dtype=float)
    return lay[(np.isinf(v) | (np.isnan(v) & ~np.isnan(v).all(axis=0))).any(axis=1)]


def non_finite(rec: VariantRecords, th: Thresholds) -> list[Finding]:
    """Any NaN/inf in the gradients or the signals; points at the first step and layer."""
    bad_p, bad_l = _bad_params(rec.params), _bad_layers(rec.layers)
    if bad_p.empty and bad_l.empty:
        return []
    steps = sorted(set(bad_p["step"]) | set(bad_l["step"]))
    first = steps[0]
    at = pd.concat([bad_p[bad_p["step"] == first], bad_l[bad_l["step"] == first]])
    depths = sorted(set(at["depth"].astype(int)))
    where = rec.layer_names([max(depths)])[0]
    evidence = {
        "first_step": int(first),
        "first_layer_from_output": where,
        "nonfinite_gradient_elements": int(rec.params["grad_nonfinite"].sum()),
        "steps_affected": len(steps),
        "steps_recorded": len(rec.steps),
    }
    return [
        Finding(
            code="non_finite",
            severity=ERROR,
            variant=rec.variant,
            layers=rec.layer_names(depths),
            steps=tuple(int(s) for s in steps),
            evidence=evidence,
            summary=(
                f"non-finite values (NaN/inf) from step {first}, first in layer '{where}' "
                f"(nearest the output, where backprop starts), on {len(steps)} of "
                f"{len(rec.steps)} recorded steps"
            ),
            explanation=(
                "Once one NaN or inf enters the backward pass it spreads to every layer below "
                "it and, after the update, to the weights: the run cannot recover by itself. "
                "Usual causes: a learning rate so large that weights overflow, log/sqrt/division "
                "of 0 in the loss, or bad values in the data."
            ),
            remedies=R.for_non_finite(),
        )
    ]
