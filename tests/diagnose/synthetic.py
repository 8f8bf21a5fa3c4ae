"""Synthetic record tables: every step and layer given, any cell overridden."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from gradprobe.records import conform

Row = dict[str, Any]


def tables(
    norms: Sequence[float],
    steps: int = 8,
    *,
    activation: str = "tanh",
    edit: Callable[[int, int, Row, Row], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Weight gradients, per-example gradients and backward signal equal to ``norms`` (input to
    output) at every step; ``edit(step, depth, param_row, layer_row)`` may change any cell."""
    prows, lrows = [], []
    for step in range(steps):
        for d, n in enumerate(norms):
            base = {"step": step, "layer": f"l{d}", "depth": d}
            p = {
                **base,
                "param": "weight",
                "numel": 64 * 64,
                "grad_norm": n,
                "grad_rms": n / 64,
                "grad_mean": 0.0,
                "grad_std": n / 64,
                "grad_max_abs": n,
                "grad_zero_frac": 0.0,
                "grad_nonfinite": 0,
                "weight_norm": 8.0,
                "update_norm": 8e-3,
                "update_ratio": 1e-3,
                "pe_grad_rms": n,
                "skipped": False,
            }
            lay = {
                **base,
                "kind": "Linear",
                "activation": activation,
                "act_mean": 0.0,
                "act_std": 0.5,
                "act_rms": 0.5,
                "saturated_frac": 0.0 if activation in ("tanh", "sigmoid") else np.nan,
                "dead_frac": np.nan if activation in ("tanh", "sigmoid") else 0.0,
                "backward_norm": n,
                "skipped": False,
            }
            if edit is not None:
                edit(step, d, p, lay)
            prows.append(p)
            lrows.append(lay)
    return conform(pd.DataFrame(prows), "params"), conform(pd.DataFrame(lrows), "layers")
