"""What a framework backend hands back after training one variant (framework-free)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd


class Recorder(Protocol):
    """The part of a monitor the runner uses (the torch Monitor and the Keras callback)."""

    def to_pandas(self, table: str = "params") -> pd.DataFrame: ...
    def flush(self) -> None: ...


@dataclass
class Outcome:
    """One trained variant: its monitor, per-step and per-epoch rows, and how it ended.

    ``steps`` rows: step, epoch, loss. ``epochs`` rows: epoch, steps, train_loss, test_loss,
    train_accuracy, test_accuracy; ``start`` is the same row before training (epoch -1).
    ``firstlayer`` rows (recorded steps only): step, true_mean_abs_grad, estimate_mean_abs,
    cumulative_estimate_mean_abs.
    """

    monitor: Recorder
    steps: list[dict[str, Any]] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    firstlayer: list[dict[str, Any]] = field(default_factory=list)
    start: dict[str, Any] = field(default_factory=dict)
    status: str = "complete"  # "complete", "non_finite" or "interrupted"
    message: str = ""
