"""Gradient flow through depth: the math behind ``vanishing`` and ``exploding``.

For norms n_1..n_L of one step, input to output, the rules read two scale-free numbers:

- the first/last ratio r = n_1 / n_L (multiplying the loss by any constant leaves it unchanged);
- the per-layer factor f = exp(-median_l (ln n_{l+1} - ln n_l)): the typical share of the signal
  one layer passes on towards the input (f^(L-1) = r for an exact geometric decay; sqrt(chi_1) in
  mean-field theory, 0.236 for sigmoid with Glorot init). The median makes one odd layer (a
  bottleneck, the first layer's transient) no trend; the least-squares slope s of ln n_l against
  depth l is reported beside it.

Which norms: the backward signal ||dL/dh_l|| when recorded -- it sums per-example squared norms,
so it has no cross-example "common-mode" term and does not fall with the batch size as batch-mean
weight gradients do (theory.md 9.3), and it sees the vanishing that flat weight gradients can
hide (theory.md 0.3); else the per-example weight-gradient RMS (``pe_grad_rms``); else the
batch-mean weight gradients with the stricter ``batch_ratio_low``.

Example:
    >>> t = depth_trend([1e-4, 1e-3, 1e-2, 1e-1])
    >>> round(t.ratio, 6), round(t.factor, 6)
    (0.001, 0.1)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gradprobe.diagnosis.thresholds import Thresholds
from gradprobe.diagnosis.view import VariantRecords

MEASURES = {
    "backward": ("backward_norm", "backward signal ||dL/dh||"),
    "per_example": ("pe_grad_rms", "per-example weight gradient RMS"),
    "batch": ("grad_norm", "batch-mean weight gradient ||dL/dW||"),
}
_TINY = np.finfo(float).tiny


@dataclass(frozen=True)
class Trend:
    """First/last ratio, typical per-layer factor and slope of ln-norm against depth (one step)."""

    ratio: float
    factor: float
    slope: float
    layers: int


def depth_trend(norms: Sequence[float] | np.ndarray) -> Trend:
    """The depth trend of norms ordered input to output (zeros count as vanished).

    The ratio is n_1 / n_L: 0/0 (no gradient anywhere) is NaN, never infinite.

    Example:
        >>> depth_trend([2.0, 2.0]).ratio
        1.0
    """
    n = np.asarray(norms, dtype=float)
    logs = np.log(np.maximum(n, _TINY))
    depth = np.arange(len(n), dtype=float)
    slope = float(np.polyfit(depth, logs, 1)[0]) if len(n) >= 2 else 0.0
    step = float(np.median(np.diff(logs))) if len(n) >= 2 else 0.0
    # nothing reached the last layer: 0/0 is no ratio (NaN), x/0 an infinite one
    ratio = float(n[0] / n[-1]) if n[-1] > 0 else (math.nan if n[0] == 0 else math.inf)
    return Trend(ratio=ratio, factor=math.exp(-step), slope=slope, layers=len(n))


def measure(rec: VariantRecords) -> tuple[str, pd.DataFrame]:
    """The best recorded measure of gradient flow and its step x depth grid (see module doc)."""
    for key, (column, _) in MEASURES.items():
        grid = rec.grid(column).dropna(axis=1, how="all")
        if grid.shape[1] >= 2:
            return key, grid
    return "batch", pd.DataFrame()


def trends(grid: pd.DataFrame) -> dict[int, Trend]:
    """step -> Trend, over steps whose norms are all finite and whose last layer got a gradient
    (with none there, a step has nothing to compare: see the ``zero_gradients`` rule)."""
    out = {}
    for step, row in grid.iterrows():
        values = row.to_numpy(dtype=float)
        if len(values) >= 2 and np.all(np.isfinite(values)) and values[-1] > 0:
            out[int(step)] = depth_trend(values)
    return out


def log_threshold(
    rec: VariantRecords, key: str, th: Thresholds, high: bool, warn: bool = False
) -> float:
    """ln of the ratio beyond which a step counts, widened to the net's seed spread.

    ``warn``: the milder ``ratio_warn`` bound of a vanishing warning (never for batch-mean
    gradients, whose ratio falls with the batch size even in healthy nets)."""
    low = th.ratio_warn if warn else th.ratio_low
    base = (
        math.log(th.ratio_high)
        if high
        else -math.log(th.batch_ratio_low if key == "batch" else low)
    )
    tol = rec.log_tolerance if th.use_seed_tolerance else 0.0
    return max(abs(base), tol)


def flagged(trend: Trend, limit: float, th: Thresholds, high: bool) -> bool:
    """Whether one step's trend passes ``limit`` (= |ln r| needed) in the given direction."""
    if math.isnan(trend.ratio):
        return False  # 0/0: no gradient, neither vanishing nor exploding
    lr = math.log(trend.ratio) if trend.ratio > 0 else -math.inf
    if high:
        return lr > limit and (trend.layers < 3 or trend.factor > 1.0 / th.layer_factor)
    return lr < -limit and (trend.layers < 3 or trend.factor < th.layer_factor)


def persistent(mask: Sequence[bool], min_fraction: float) -> bool:
    """True when ``mask`` holds on >= min_fraction of the steps, or on all of the last quarter.

    Example:
        >>> persistent([False, False, False, True], 0.5), persistent([True, False], 0.5)
        (True, True)
    """
    m = np.asarray(mask, dtype=bool)
    if m.size == 0:
        return False
    tail = m[-max(1, m.size // 4) :]
    return bool(m.mean() >= min_fraction or tail.all())


def geomean(values: Sequence[float]) -> float:
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return math.nan
    with np.errstate(divide="ignore"):
        return float(np.exp(np.mean(np.log(v))))


def step_ratio(rec: VariantRecords, column: str, step: int) -> float:
    """First/last ratio of ``column`` at ``step`` (NaN when it was not recorded)."""
    grid = rec.grid(column).dropna(axis=1, how="all")
    if step not in grid.index or grid.shape[1] < 2:
        return math.nan
    row = grid.loc[step].to_numpy(dtype=float)
    return float(row[0] / row[-1]) if row[-1] > 0 else math.nan
