"""How long a cell takes, roughly, and whether its seeds train batched.

A model step costs about ``6 * batch rows * weights`` floating-point operations (forward and
backward) plus a fixed overhead (Python, hooks, the monitor's reductions). Batching seeds saves
the overhead, not the arithmetic: it wins where the arithmetic is small (the classification
model: ~1e5 flop per step) and gains nothing for the 10 x 64 model on 512 rows (~1e8 flop per
step, compute-bound), so such cells train seed after seed.
"""

from __future__ import annotations

import math

from gradprobe.experiments.spec import ModelSpec
from gradprobe.lab.spec import Cell

FLOP_RATE = 2e9  # flop/s of one CPU core on small float32 matrix products (measured, rounded)
STEP_OVERHEAD_S = 4e-3  # one watched step of one model, sequential
BATCHED_STEP_OVERHEAD_S = 3e-3  # one step of a batched stack, records included
DIAGNOSE_S = 0.05  # the diagnosis of one seed's records
BATCHED_MAX_FLOP = 2e6  # batch only where one model's step is below this much arithmetic


def supports(model: ModelSpec) -> bool:
    """Whether seeds of ``model`` can train batched (no normalisation layer)."""
    return model.norm == "none"


def n_weights(cell: Cell, n_inputs: int) -> int:
    w = cell.model.widths(n_inputs)
    return sum(a * b + b for a, b in zip(w[:-1], w[1:], strict=True))


def steps(cell: Cell, n_train: int) -> int:
    rows = min(cell.train.rows or n_train, n_train)
    batch = min(cell.train.batch_size or rows, rows)
    return math.ceil(rows / batch) * cell.train.epochs


def step_flop(cell: Cell, n_inputs: int, n_train: int) -> float:
    rows = min(cell.train.rows or n_train, n_train)
    return 6.0 * min(cell.train.batch_size or rows, rows) * n_weights(cell, n_inputs)


def choose_batched(cell: Cell, n_inputs: int, n_train: int, policy: str = "auto") -> bool:
    """Train ``cell``'s seeds as one batched model? ``policy``: auto, on or off."""
    if policy == "off" or len(cell.seeds) < 2 or not supports(cell.model):
        return False
    return policy == "on" or step_flop(cell, n_inputs, n_train) <= BATCHED_MAX_FLOP


def seconds(cell: Cell, n_inputs: int, n_train: int, batched: bool) -> float:
    """Estimated wall time of the cell (all its seeds)."""
    n, s = steps(cell, n_train), len(cell.seeds)
    compute = n * s * step_flop(cell, n_inputs, n_train) / FLOP_RATE
    overhead = n * (BATCHED_STEP_OVERHEAD_S if batched else s * STEP_OVERHEAD_S)
    return compute + overhead + s * DIAGNOSE_S


def fmt_duration(s: float) -> str:
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"
