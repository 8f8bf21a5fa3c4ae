"""The report's charts: matplotlib figures rendered to inline SVG (no file, no network).

Charts carry no string from the run in their titles (titles are HTML, escaped by the template);
legend labels that name variants are escaped by matplotlib's SVG writer. Text stays text
(``svg.fonttype = none``, generic font family) and ids are salted with a constant, so the same
run gives the same SVG.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from gradprobe.views.plots import _log_axis, _positive, depth_labels  # noqa: E402

_RC: Any = {"svg.fonttype": "none", "svg.hashsalt": "gradprobe", "font.family": "sans-serif"}


def svg(fig: Figure) -> str:
    """The figure as an ``<svg>`` element (XML prolog and doctype dropped); closes the figure."""
    buf = io.StringIO()
    with plt.rc_context(_RC):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _shown_steps(grid: pd.DataFrame, epoch_of: dict[int, int]) -> dict[int, int]:
    """epoch -> its first recorded step (one line per epoch)."""
    shown: dict[int, int] = {}
    for s in grid.index:
        shown.setdefault(int(epoch_of.get(int(s), 0)), int(s))
    return shown


def by_depth_per_epoch(grid: pd.DataFrame, epoch_of: dict[int, int], ylabel: str) -> Figure:
    """One line per epoch (its first recorded step) of a step x depth grid, log scale."""
    fig, ax = plt.subplots(figsize=(7, 3.6), layout="constrained")
    shown = _shown_steps(grid, epoch_of)
    cmap = plt.get_cmap("viridis")
    for i, (epoch, s) in enumerate(sorted(shown.items())):
        color = cmap(i / max(1, len(shown) - 1))
        values = _positive(grid.loc[s].to_numpy())
        ax.plot(range(len(values)), values, marker="o", color=color, label=f"epoch {epoch + 1}")
    _log_axis(ax, grid.shape[1], ylabel)
    if shown:
        ax.legend(fontsize=7)
    return fig


def activation_health(sat: pd.DataFrame, dead: pd.DataFrame, thresholds: tuple[float, float]):
    """Saturated (sigmoid/tanh) and dead (ReLU) fractions by layer: first and last step."""
    fig, ax = plt.subplots(figsize=(7, 3.2), layout="constrained")
    n = max(sat.shape[1] if not sat.empty else 0, dead.shape[1] if not dead.empty else 0)
    for grid, name, color, limit in (
        (sat, "saturated", "tab:orange", thresholds[0]),
        (dead, "dead", "tab:red", thresholds[1]),
    ):
        grid = grid.dropna(axis=1, how="all")
        if grid.empty:
            continue
        x = list(grid.columns)
        ax.plot(x, grid.iloc[0], marker="o", color=color, label=f"{name}, first step")
        ax.plot(x, grid.iloc[-1], marker="s", ls="--", color=color, label=f"{name}, last step")
        ax.axhline(limit, color=color, lw=0.8, ls=":")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xticks(range(n), depth_labels(n))
    ax.set_xlabel("layer (input \u2192 output)")
    ax.set_ylabel("fraction")
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no sigmoid/tanh/ReLU activation recorded", ha="center", va="center")
    return fig


def update_ratios(grid: pd.DataFrame, stall: float, high: float) -> Figure:
    """||dW||/||W|| per layer: median over steps with its min-max range; 1e-3 for reference."""
    fig, ax = plt.subplots(figsize=(7, 3.4), layout="constrained")
    grid = grid.dropna(axis=0, how="all")
    n = grid.shape[1]
    if grid.empty:
        ax.text(0.5, 0.5, "no optimizer step recorded", ha="center", va="center")
        return fig
    v = grid.to_numpy(dtype=float)
    with np.errstate(all="ignore"):
        med, lo, hi = (np.nanmedian(v, 0), np.nanmin(v, 0), np.nanmax(v, 0))
    x = np.arange(n)
    ax.fill_between(x, _positive(lo), _positive(hi), alpha=0.2, label="min-max over steps")
    ax.plot(x, _positive(med), marker="o", label="median")
    for y, style, label in (
        (1e-3, "-", "~1e-3 healthy"),
        (stall, ":", "stalled"),
        (high, ":", "too large"),
    ):
        ax.axhline(y, color="grey", ls=style, lw=0.8)
        ax.annotate(label, (n - 1, y), fontsize=6, color="grey", va="bottom", ha="right")
    _log_axis(ax, n, "update / weight ratio (log)")
    ax.legend(fontsize=7)
    return fig


def theory_vs_measured(
    measured: Mapping[str, Sequence[float]],
    predicted: Mapping[str, Sequence[float]],
    band: tuple[Sequence[float], Sequence[float]],
) -> Figure:
    """Per-layer norms relative to the last layer: measured (markers) and predicted (lines)."""
    fig, ax = plt.subplots(figsize=(7, 3.6), layout="constrained")
    n = max(len(v) for v in list(measured.values()) + list(predicted.values()))
    colors = {"weight": "tab:blue", "backward": "tab:green"}
    for key, values in predicted.items():
        ax.plot(
            range(len(values)),
            _positive(np.asarray(values)),
            color=colors[key],
            label=f"predicted {key}",
        )
    lo, hi = band
    if lo:
        ax.fill_between(
            range(len(lo)), lo, hi, color=colors["weight"], alpha=0.12, label="seed-to-seed band"
        )
    for key, values in measured.items():
        ax.plot(
            range(len(values)),
            _positive(np.asarray(values)),
            ls="none",
            marker="o",
            color=colors[key],
            label=f"measured {key}",
        )
    _log_axis(ax, n, "norm / last layer's (log)")
    ax.legend(fontsize=7)
    return fig


def relative(values: Sequence[float]) -> list[float]:
    """values / last value (NaN when the last is not positive)."""
    v = [float(x) for x in values]
    last = v[-1] if v else math.nan
    return [x / last if last > 0 else math.nan for x in v]
