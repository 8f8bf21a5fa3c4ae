"""``non_finite``: a gradient has NaN/inf elements, or a norm or activation is infinite.

A NaN *statistic* means "not measured" (a frozen layer's backward signal, a layer that did not
run) and is never read as non-finite: NaN gradients are counted element by element on capture
(``grad_nonfinite``). Steps a loss scaler skipped are not seen here (``skipped_steps``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradprobe.diagnosis import remedies as R
from gradprobe.diagnosis.finding import ERROR, Finding
from gradprobe.diagnosis.thresholds import Thresholds
from gradprobe.diagnosis.view import VariantRecords


def _bad_params(p: pd.DataFrame) -> pd.DataFrame:
    """Rows with NaN/inf gradient elements, or an infinite norm (NaN: not measured)."""
    inf = np.isinf(p[["grad_norm", "weight_norm"]].to_numpy(dtype=float)).any(axis=1)
    return p[(p["grad_nonfinite"].fillna(0) > 0) | inf]


def _bad_layers(lay: pd.DataFrame) -> pd.DataFrame:
    """Rows whose activation or backward signal is infinite (NaN: not measured)."""
    return lay[np.isinf(lay[["act_rms", "backward_norm"]].to_numpy(dtype=float)).any(axis=1)]


def non_finite(rec: VariantRecords, th: Thresholds) -> list[Finding]:
    """Any NaN/inf in the gradients or the signals; points at the first step and layer. A run
    whose loss turned NaN/inf between recorded steps gets the finding from its loss."""
    bad_p, bad_l = _bad_params(rec.params), _bad_layers(rec.layers)
    if bad_p.empty and bad_l.empty:
        return _from_loss(rec)
    steps = sorted(set(bad_p["step"]) | set(bad_l["step"]))
    first = steps[0]
    at = pd.concat([bad_p[bad_p["step"] == first], bad_l[bad_l["step"] == first]])
    depths = sorted(set(at["depth"].astype(int)))
    where = rec.layer_names([max(depths)])[0]
    number = rec.numbers([max(depths)])[0]
    evidence = {
        "first_step": int(first),
        "first_layer_from_output": where,
        "first_layer_number": number,
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
            depths=rec.numbers(depths),
            steps=tuple(int(s) for s in steps),
            evidence=evidence,
            summary=(
                f"NaN/inf values from step {first}, first in layer {number} (module '{where}', "
                f"nearest the output, where backprop starts), on {len(steps)} of "
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


def _from_loss(rec: VariantRecords) -> list[Finding]:
    """The loss went NaN/inf on a step whose gradients were not recorded (``every > 1``, the
    budget): the run diverged all the same."""
    if rec.losses is None or rec.losses.empty:
        return []
    loss = rec.losses["loss"].to_numpy(dtype=float)
    bad = ~np.isfinite(loss)
    if not bad.any():
        return []
    steps = rec.losses["step"].to_numpy()[bad]
    first = int(steps.min())
    return [
        Finding(
            code="non_finite",
            severity=ERROR,
            variant=rec.variant,
            layers=(),
            depths=(),
            steps=(first,),
            evidence={
                "first_step": first,
                "first_nonfinite_loss_step": first,
                "nonfinite_loss_steps": int(bad.sum()),
                "steps_trained": len(loss),
                "steps_recorded": len(rec.steps),
            },
            summary=(
                f"the training loss is NaN/inf from step {first} on ({int(bad.sum())} of "
                f"{len(loss)} steps): the run diverged between recorded steps"
            ),
            explanation=(
                "The recorded gradients were finite, but the loss itself overflowed later: the "
                "weights grew until the forward pass produced inf or NaN, and from then on "
                "nothing trains. Usual causes: a learning rate too large for this net and data "
                "(outlying inputs make it worse), or bad values in the data."
            ),
            remedies=R.for_non_finite(),
        )
    ]
