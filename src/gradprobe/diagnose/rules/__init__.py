"""The rules, registered in one table: code -> pure function ``(records, thresholds) -> findings``.

Add a rule by writing a function that follows :class:`~gradprobe.diagnose.rules.base.Rule` in
its own module and naming it here.
"""

from __future__ import annotations

from gradprobe.diagnose.rules.activations import dead_units, saturation
from gradprobe.diagnose.rules.base import Rule
from gradprobe.diagnose.rules.gradient_flow import exploding, vanishing
from gradprobe.diagnose.rules.non_finite import non_finite
from gradprobe.diagnose.rules.updates import stalled_layers, update_too_large

RULES: dict[str, Rule] = {
    "non_finite": non_finite,
    "vanishing": vanishing,
    "exploding": exploding,
    "saturation": saturation,
    "dead_units": dead_units,
    "stalled_layers": stalled_layers,
    "update_too_large": update_too_large,
}

__all__ = ["RULES", "Rule"]
