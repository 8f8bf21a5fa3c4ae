"""How long a cell takes, roughly, and whether its seeds train batched.

A model step costs about ``6 * batch rows * weights`` floating-point operations (forward and
backward) plus a fixed overhead (Python, hooks, the monitor's reductions). Batching seeds saves
the overhead, not the arithmetic: it wins where the arithmetic is small (the classification
model: ~1e5 flop per step) and gains nothing for the 10 x 64 model on 512 rows (~1e8 flop per
step, compute-bound), so such cells train seed after seed.
"""

from __future__ import annotations

import math
import os

from gradprobe.experiments.spec import ModelSpec
from gradprobe.lab.spec import Cell

# Measured on a 2-core CPU VM (torch 2.13, one thread), rounded; checked by
# benchmarks/bench_lab.py. Small float32 matrix products run at ~2e10 flop/s on one core; a step
# costs a fixed Python/autograd overhead on top, more when the monitor records it.
FLOP_RATE = 2e10  # flop/s of one core on small float32 matrix products (MKL, AVX2)
STEP_OVERHEAD_S = 1.0e-3  # one unrecorded step of one model, sequential
RECORD_OVERHEAD_S = 4.0e-3  # extra for a recorded step of one model (hooks, reductions)
BATCHED_STEP_OVERHEAD_S = 1.0e-3  # one unrecorded step of a batched stack
BATCHED_RECORD_OVERHEAD_S = 3.0e-3  # extra for a recorded step of a batched stack
EPOCH_OVERHEAD_S = 1.5e-3  # the evaluation at the end of each epoch, besides its arithmetic
DIAGNOSE_S = 0.1  # the diagnosis of one seed's records
PLOT_S = 0.2  # one cell's loss-curve PNG, drawn when the sweep finishes
STARTUP_S = 2.5  # import torch and gradprobe, load the data, write the report (1.6-2 s idle)
WORKER_START_S = 3.0  # a worker process starting (they start together)
BATCHED_MAX_FLOP = 2e6  # batch only where one model's step is below this much arithmetic
LOAD_FACTOR = 2.0  # the training constants were measured on an idle machine; shared CI and dev
# machines train 1-4x slower (2 cores, other jobs, torch's two threads contending): the
# estimate aims at the middle, so it is within 2x of both (benchmarks/bench_lab.py --estimate;
# 2026-12-05, idle: a 4-training classification sweep took 3.3-3.8 s, estimated 5.8 s)


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


def seconds(cell: Cell, n_inputs: int, n_train: int, batched: bool, n_test: int = 0) -> float:
    """Estimated wall time of training the cell (all its seeds) and diagnosing each seed."""
    n, s = steps(cell, n_train), len(cell.seeds)
    recorded = math.ceil(n / max(1, cell.every))
    compute = n * s * step_flop(cell, n_inputs, n_train) / FLOP_RATE
    rows = min(cell.train.rows or n_train, n_train)
    evals = cell.train.epochs * s * 2.0 * (rows + n_test) * n_weights(cell, n_inputs) / FLOP_RATE
    if batched:
        overhead = n * BATCHED_STEP_OVERHEAD_S + recorded * BATCHED_RECORD_OVERHEAD_S
    else:
        overhead = s * (n * STEP_OVERHEAD_S + recorded * RECORD_OVERHEAD_S)
    epochs = cell.train.epochs * (1 if batched else s) * EPOCH_OVERHEAD_S
    return compute + evals + overhead + epochs + s * DIAGNOSE_S


def total(
    cell_seconds: list[float], n_cells: int, workers: int = 1, scale: float = LOAD_FACTOR
) -> float:
    """Estimated wall time of a sweep: the cells still to run (``cell_seconds``) spread over
    the workers that can run at once, plus starting up and, at the end, one plot per cell of
    the sweep (``n_cells``, finished ones included) and the report; the work scaled by
    ``scale``."""
    parallel = max(1, min(workers, os.cpu_count() or 1, len(cell_seconds)))
    start = STARTUP_S + (WORKER_START_S if workers > 1 and cell_seconds else 0.0)
    return start + (sum(cell_seconds) / parallel + n_cells * PLOT_S) * scale


def fmt_duration(s: float) -> str:
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"
