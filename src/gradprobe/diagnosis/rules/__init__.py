"""The rules, registered in one table: code -> pure function ``(records, thresholds) -> findings``.

Add a rule by writing a function that follows :class:`~gradprobe.diagnosis.rules.base.Rule` in
its own module and naming it here.
"""

from __future__ import annotations

from gradprobe.diagnosis.rules.activations import dead_units, saturation
from gradprobe.diagnosis.rules.base import Rule
from gradprobe.diagnosis.rules.gradient_flow import exploding, vanishing
from gradprobe.diagnosis.rules.non_finite import non_finite
from gradprobe.diagnosis.rules.steps import skipped_steps, zero_gradients
from gradprobe.diagnosis.rules.theory import theory_mismatch
from gradprobe.diagnosis.rules.updates import stalled_layers, update_too_large

RULES: dict[str, Rule] = {
    "non_finite": non_finite,
    "skipped_steps": skipped_steps,
    "zero_gradients": zero_gradients,
    "vanishing": vanishing,
    "exploding": exploding,
    "saturation": saturation,
    "dead_units": dead_units,
    "stalled_layers": stalled_layers,
    "update_too_large": update_too_large,
    "theory_mismatch": theory_mismatch,
}

__all__ = ["RULES", "Rule"]
