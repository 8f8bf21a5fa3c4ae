"""``skipped_steps`` and ``zero_gradients``: steps on which the weights learned nothing.

Neither is a gradient pathology of the network, and neither feeds the other rules: a step a
loss scaler skipped (GradScaler found inf/NaN in the *scaled* gradients, lowered its scale and
did not step) is set apart before any rule runs (:mod:`gradprobe.diagnosis.view`); a step whose
gradients are all exactly zero has no depth ratio (0/0 is not "exploding") and no update to
judge. Each is information when it happens now and then, a warning when it persists.
"""

from __future__ import annotations

from gradprobe.diagnosis import flow
from gradprobe.diagnosis import remedies as R
from gradprobe.diagnosis.finding import INFO, WARNING, Finding
from gradprobe.diagnosis.thresholds import Thresholds
from gradprobe.diagnosis.view import VariantRecords


def skipped_steps(rec: VariantRecords, th: Thresholds) -> list[Finding]:
    """Steps the optimizer skipped because the loss scaler found inf/NaN."""
    skipped = rec.skipped_steps
    if not skipped:
        return []
    recorded = sorted(set(rec.steps) | set(skipped))
    persists = flow.persistent([s in skipped for s in recorded], th.min_fraction)
    ev = {
        "steps_skipped": len(skipped),
        "steps_recorded": len(recorded),
        "first_skipped_step": int(skipped[0]),
    }
    return [
        Finding(
            code="skipped_steps",
            severity=WARNING if persists else INFO,
            variant=rec.variant,
            layers=(),
            steps=tuple(int(s) for s in skipped),
            evidence=ev,
            summary=(
                f"{ev['steps_skipped']} of {ev['steps_recorded']} recorded steps skipped by the "
                f"loss scaler (from step {ev['first_skipped_step']}): inf/NaN in the scaled "
                "gradients, no update"
            ),
            explanation=(
                "A loss scaler (torch.amp.GradScaler, Keras's LossScaleOptimizer) multiplies "
                "the loss so small fp16 gradients do not underflow; when the scaled gradients "
                "overflow it skips the step and lowers the scale. A few skips are how it works; "
                + (
                    "skipping most steps means the gradients overflow even unscaled, or are NaN."
                    if persists
                    else "the other rules leave these steps out."
                )
            ),
            remedies=R.for_skipped(persists),
        )
    ]


def zero_gradients(rec: VariantRecords, th: Thresholds) -> list[Finding]:
    """Steps on which every recorded gradient is exactly zero."""
    zero = rec.zero_steps
    if not zero:
        return []
    steps = list(rec.steps)
    persists = flow.persistent([s in zero for s in steps], th.min_fraction)
    ev = {
        "steps_zero": len(zero),
        "steps_recorded": len(steps),
        "first_zero_step": int(zero[0]),
    }
    return [
        Finding(
            code="zero_gradients",
            severity=WARNING if persists else INFO,
            variant=rec.variant,
            layers=(),
            steps=tuple(int(s) for s in zero),
            evidence=ev,
            summary=(
                f"gradients exactly zero on {ev['steps_zero']} of {ev['steps_recorded']} "
                f"recorded steps (from step {ev['first_zero_step']}): no gradient reached any "
                "weight, nothing was learned there"
            ),
            explanation=(
                "Every gradient being exactly 0 means the loss did not depend on the weights "
                "at that step: a fully masked batch (every label ignored), a loss multiplied by "
                "0, or an output cut from the graph. It is no vanishing or exploding gradient "
                "(those compare layers that do get a gradient), and those steps are left out "
                "of the other rules."
            ),
            remedies=R.for_zero_gradients(),
        )
    ]
