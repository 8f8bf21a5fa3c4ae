"""The sweep's figures (matplotlib, no torch): ratio against depth with a band over seeds, the
remedy ranking, loss curves per cell. Each function returns a Figure; :func:`save_plots` writes
PNGs."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

CONFIG = ("activation", "init", "norm", "residual", "residual_scale", "optimizer", "lr")
CONFIG += ("epochs", "batch_size", "rows", "clip", "width", "remedy")


def line_keys(results: pd.DataFrame) -> list[str]:
    """The configuration columns that vary in ``results`` (besides depth): one line per value."""
    return [c for c in CONFIG if c in results and results[c].astype(str).nunique() > 1]


def ratio_vs_depth(results: pd.DataFrame) -> Figure:
    """First/last weight-gradient ratio against depth, log scale: one line per configuration
    (median over seeds), a band from the smallest to the largest seed."""
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    r = results[(results["status"] != "error") & (results["first_last_ratio"] > 0)]
    keys = line_keys(r)
    groups = r.groupby(keys, sort=False) if keys else [((), r)]
    for name, g in groups:
        stats = g.groupby("depth")["first_last_ratio"].agg(["median", "min", "max"])
        label = ", ".join(map(str, name if isinstance(name, tuple) else (name,))) or "all"
        line = ax.plot(stats.index, stats["median"], marker="o", label=label)[0]
        ax.fill_between(stats.index, stats["min"], stats["max"], alpha=0.2, color=line.get_color())
    ax.set_yscale("log")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("hidden layers (depth)")
    ax.set_ylabel("first / last layer ||dL/dW|| (step 0)")
    ax.grid(True, which="both", alpha=0.3)
    if len(ax.lines) > 1:
        ax.legend(fontsize=7, title=", ".join(keys) or None, title_fontsize=7)
    return fig


def remedy_ranking(ranking: pd.DataFrame) -> Figure:
    """Health score (2 per error, 1 per warning; lower is better) and test loss per remedy."""
    n = len(ranking)
    fig, (a1, a2) = plt.subplots(
        1, 2, figsize=(9, 0.35 * n + 1.4), sharey=True, layout="constrained"
    )
    y = np.arange(n)[::-1]
    a1.barh(y, ranking["health"], color="tab:red", alpha=0.7)
    a1.set_yticks(y, ranking["remedy"])
    a1.set_xlabel("findings score per seed (lower = healthier)")
    a2.barh(
        y,
        ranking["test_loss"],
        xerr=ranking["test_loss_std"].fillna(0),
        color="tab:blue",
        alpha=0.7,
    )
    a2.set_xlabel("test loss (mean, +- std over seeds)")
    for a in (a1, a2):
        a.grid(True, axis="x", alpha=0.3)
    return fig


def loss_curves(steps: pd.DataFrame, title: str) -> Figure:
    """Training loss per step, one line per seed."""
    fig, ax = plt.subplots(figsize=(5, 3), layout="constrained")
    for seed, g in steps.groupby("seed"):
        ax.plot(g["step"], g["loss"], lw=1, alpha=0.8, label=f"seed {seed}")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (batch)")
    ax.set_title(title, fontsize=8)
    ax.grid(True, alpha=0.3)
    return fig


def save_plots(root: Path, results: pd.DataFrame, ranking: pd.DataFrame | None) -> list[Path]:
    """Write the sweep's PNGs into ``root/plots``; returns their paths."""
    from gradprobe.lab.store import cell_table

    out = root / "plots"
    out.mkdir(parents=True, exist_ok=True)
    figs: list[tuple[str, Figure]] = []
    if len(results) and results["depth"].nunique() > 1:
        figs.append(("ratio_vs_depth.png", ratio_vs_depth(results)))
    if ranking is not None and len(ranking):
        figs.append(("remedy_ranking.png", remedy_ranking(ranking)))
    for key, label in results[["cell", "label"]].drop_duplicates().itertuples(index=False):
        steps = cell_table(root, key, "steps")
        if len(steps):
            figs.append((f"loss-{key}.png", loss_curves(steps, label)))
    paths = []
    for name, fig in figs:
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        paths.append(out / name)
    return paths
