"""``theory_mismatch``: the network at initialisation does not scale gradients as theory says.

Mean-field theory predicts the per-example weight-gradient norm of each layer relative to the
readout's, to 1-2% for plain MLPs (theory.md 9.2). One network may stray from it by chance by
about a factor exp(2 sqrt(5 beta)) (beta = sum of 1/width, Hanin 2018); a larger departure at the
first recorded step (the weights as initialised) means the network is not what its configuration
says: weights not drawn as named, inputs far from their recorded scale, or an unusual layer.
"""

from __future__ import annotations

import math

import numpy as np

from gradprobe.diagnosis.finding import INFO, WARNING, Finding, Remedy
from gradprobe.diagnosis.rules.base import fmt
from gradprobe.diagnosis.thresholds import Thresholds
from gradprobe.diagnosis.view import VariantRecords

REMEDIES = (
    Remedy(
        "check init",
        "Check how the weights were drawn: the prediction assumes independent weights with the "
        "named scheme's variance; re-initialise with the named scheme, or name the one you use.",
    ),
    Remedy(
        "check inputs",
        "Check the inputs' scale: the prediction uses their recorded second moment; standardise "
        "the features (mean 0, variance 1) so the first layers see what the theory assumes.",
    ),
)


def _measured(rec: VariantRecords) -> tuple[int, np.ndarray] | None:
    w = rec.weights.dropna(subset=["pe_grad_rms"])
    if w.empty:
        return None
    step = int(w["step"].min())
    v = w[w["step"] == step].sort_values("depth")["pe_grad_rms"].to_numpy(dtype=float)
    if len(v) < 2 or not np.all(np.isfinite(v)) or v[-1] <= 0 or v[0] <= 0:
        return None
    return step, v / v[-1]


def theory_mismatch(rec: VariantRecords, th: Thresholds) -> list[Finding]:
    """Measured first/readout per-example gradient ratio at the first step against theory."""
    pred = rec.prediction
    got = _measured(rec)
    if pred is None or got is None or got[0] != 0:
        return []  # theory speaks of the network as initialised: step 0 only
    step, measured = got
    predicted = np.asarray(pred.grad_norm_by_depth, dtype=float)
    if len(predicted) != len(measured) or predicted[0] <= 0:
        return []
    off = math.log(measured[0] / predicted[0])
    tol = float(pred.log_tolerance)
    if abs(off) <= tol:
        return []
    first_layer = sorted(rec.weights["depth"].unique())[:1]
    factor = math.exp(abs(off))
    far = abs(off) > 2 * tol
    return [
        Finding(
            code="theory_mismatch",
            severity=WARNING if far else INFO,
            variant=rec.variant,
            layers=rec.layer_names(first_layer),
            depths=rec.numbers(first_layer),
            steps=(step,),
            evidence={
                "measured_first_last_ratio": float(measured[0]),
                "predicted_first_last_ratio": float(predicted[0]),
                "factor": factor,
                "log_tolerance": tol,
                "chance_factor": math.exp(tol),
                "measured_by_depth": [float(x) for x in measured],
                "predicted_by_depth": [float(x) for x in predicted],
            },
            summary=(
                f"the first layer's per-example gradient departs from theory: it is "
                f"{fmt(measured[0])} x the readout's at initialisation, theory predicts "
                f"{fmt(predicted[0])} (off by x{fmt(factor)}, chance allows x{fmt(math.exp(tol))})"
            ),
            explanation=(
                "Mean-field theory predicts how gradients scale through a plain MLP at "
                "initialisation to a few percent; a departure this large means the network "
                "differs from its configuration (how weights were drawn, the inputs' scale) "
                "or has layers the theory does not model."
            ),
            remedies=REMEDIES,
        )
    ]
