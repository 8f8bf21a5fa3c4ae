"""The thresholds of the rules: typed, frozen, with documented defaults; override any of them.

Every gradient criterion is depth-relative and scale-free: it compares layers of one network at
one step, never a norm against an absolute number (absolute thresholds change meaning with the
loss scale, batch size and width; see ``docs/peers.md``).

Example:
    >>> Thresholds().ratio_low
    0.01
    >>> Thresholds(ratio_low=1e-3).ratio_low
    0.001
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from gradprobe.errors import UsageError


@dataclass(frozen=True)
class Thresholds:
    """When each rule fires.

    Gradient flow (``vanishing``, ``exploding``), per step, on the backward signal ||dL/dh||
    (or the per-example weight gradient when the backward signal was not recorded):

    - ``ratio_low`` = 1e-2, ``ratio_high`` = 1e2: the first/last ratio r = n_1 / n_L that counts
      as vanishing or exploding (the theory module's verdict uses the same numbers);
    - ``ratio_warn`` = e^-3 = 0.0498: a backward signal (or per-example weight gradient) that
      falls by more than this over the net has passed Schoenholz's trainable depth 6 xi
      (||delta|| falls as exp(-L / (2 xi))): a ``vanishing`` warning, as the theory's verdict
      says for ReLU with Glorot init; an error only when the weight gradients fall below
      ``ratio_low`` too;
    - the threshold is widened to the seed-to-seed spread of the network when that is larger:
      |ln r| must also exceed ``log_tolerance`` = max(ln 2, 2 sqrt(5 beta)), beta = sum 1/width
      (Hanin 2018), so narrow nets are not flagged for what chance alone produces;
    - ``layer_factor`` = 0.9: the per-layer factor exp(slope of ln n against depth) must agree:
      below 0.9 for vanishing (above 1/0.9 for exploding), so one odd layer is not a trend;
    - ``batch_ratio_low`` = 1e-3: the stricter bound used when only batch-mean weight gradients
      exist (they fall towards the input even in healthy ReLU/sigmoid nets, more so with large
      batches: He ReLU gives 0.13 at batch 1024; theory.md 9.3).

    Activations: ``saturated_high`` = 0.25 (share of sigmoid/tanh outputs whose derivative is
    under 1% of its maximum), ``dead_high`` = 0.5 (share of ReLU units silent for the whole
    batch). Updates (weights only): ``stall_ratio`` = 1e-5 (||dW||/||W|| per step; ~1e-3 is
    healthy), ``update_high`` = 0.1.

    Persistence: a condition counts when it holds on at least ``min_fraction`` = 0.5 of the
    recorded steps, or on every step of the last quarter of them (it got stuck). Steps a loss
    scaler skipped (``skipped_steps``) and steps with no gradient at all (``zero_gradients``)
    are information, and a warning when they persist in this sense; so is a ``vanishing``
    seen at the first recorded step only (the net as initialised, what the theory speaks of)
    that training undid.
    """

    ratio_low: float = 1e-2
    ratio_warn: float = math.exp(-3.0)
    ratio_high: float = 1e2
    layer_factor: float = 0.9
    batch_ratio_low: float = 1e-3
    use_seed_tolerance: bool = True
    saturated_high: float = 0.25
    dead_high: float = 0.5
    stall_ratio: float = 1e-5
    update_high: float = 0.1
    min_fraction: float = 0.5

    def __post_init__(self) -> None:
        checks = {
            "ratio_low": 0 < self.ratio_low < 1,
            "ratio_warn": self.ratio_low <= self.ratio_warn < 1,
            "ratio_high": self.ratio_high > 1,
            "layer_factor": 0 < self.layer_factor <= 1,
            "batch_ratio_low": 0 < self.batch_ratio_low < 1,
            "saturated_high": 0 < self.saturated_high <= 1,
            "dead_high": 0 < self.dead_high <= 1,
            "stall_ratio": self.stall_ratio > 0,
            "update_high": self.update_high > 0,
            "min_fraction": 0 < self.min_fraction <= 1,
        }
        for name, ok in checks.items():
            value = getattr(self, name)
            if not ok or not math.isfinite(value):
                raise UsageError(f"Thresholds.{name}: {value!r} is out of range ({_RANGES[name]})")

    def replace(self, **changes: Any) -> Thresholds:
        """A copy with some thresholds changed (unknown names list the valid ones)."""
        names = {f.name for f in dataclasses.fields(self)}
        bad = sorted(set(changes) - names)
        if bad:
            raise UsageError(f"unknown threshold(s) {bad}: expected some of {sorted(names)}")
        return dataclasses.replace(self, **changes)


_RANGES = {
    "ratio_low": "0 < x < 1",
    "ratio_warn": "ratio_low <= x < 1",
    "ratio_high": "x > 1",
    "layer_factor": "0 < x <= 1",
    "batch_ratio_low": "0 < x < 1",
    "saturated_high": "0 < x <= 1",
    "dead_high": "0 < x <= 1",
    "stall_ratio": "x > 0",
    "update_high": "x > 0",
    "min_fraction": "0 < x <= 1",
}
