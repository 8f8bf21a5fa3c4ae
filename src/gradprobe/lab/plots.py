"""The sweep's figures (matplotlib, no torch): ratio against depth with a band over seeds, the
remedy ranking, loss curves per cell. Each function returns a :class:`matplotlib.figure.Figure`
drawn directly (no pyplot, no backend switch: a notebook keeps its backend);
:func:`save_plots` writes PNGs and :func:`svg` inline SVG.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

CONFIG: tuple[str, ...] = ("activation", "init", "norm", "residual", "residual_scale")
CONFIG += ("optimizer", "lr", "epochs", "batch_size", "rows", "clip", "width", "remedy")
MIN_DECADES = 2.0  # a log axis spans at least this many decades, so a flat line looks flat
FAILED_COLOUR = "#b0b0b0"


def line_keys(results: pd.DataFrame) -> list[str]:
    """The configuration columns that vary in ``results`` (besides depth): one line per value."""
    return [c for c in CONFIG if c in results and results[c].astype(str).nunique() > 1]


def colours(n: int) -> list[tuple[float, ...]]:
    """``n`` distinct colours: tab10 up to 10, tab20 up to 20, then a spread of turbo."""
    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](x) for x in np.linspace(0.05, 0.95, n)]


def min_log_span(ax: object, lo: float, hi: float, decades: float = MIN_DECADES) -> None:
    """Set a log y axis to cover [lo, hi] and at least ``decades`` decades around their middle."""
    if not (lo > 0 and hi > 0 and math.isfinite(lo) and math.isfinite(hi)):
        return
    mid = (math.log10(lo) + math.log10(hi)) / 2
    half = max(decades / 2, (math.log10(hi) - math.log10(lo)) / 2 * 1.1)
    ax.set_ylim(10 ** (mid - half), 10 ** (mid + half))  # type: ignore[attr-defined]


def ratio_vs_depth(results: pd.DataFrame) -> Figure:
    """First/last weight-gradient ratio against depth, log scale: one line per configuration
    (median over seeds), a band from the smallest to the largest seed; the legend beside the
    axes, never over the data."""
    r = results[(results["status"] != "error") & (results["first_last_ratio"] > 0)]
    keys = line_keys(r)
    groups = list(r.groupby(keys, sort=False)) if keys else [((), r)]
    fig = Figure(figsize=(7.5 + (2.2 if len(groups) > 1 else 0), 4.2), layout="constrained")
    ax = fig.add_subplot()
    names = [n if isinstance(n, tuple) else (n,) for n, _ in groups]
    # colour by the first varying key, line style and marker by the others (several keys), or
    # one distinct colour per line (one key)
    firsts = list(dict.fromkeys(n[0] for n in names)) if len(keys) > 1 else names
    rests = list(dict.fromkeys(n[1:] for n in names)) if len(keys) > 1 else [()]
    palette = dict(zip(firsts, colours(len(firsts)), strict=True))
    styles = [(ls, mk) for mk in "osD^v" for ls in ("-", "--", ":", "-.")]
    for (_, g), name in zip(groups, names, strict=True):
        colour = palette[name[0] if len(keys) > 1 else name]
        ls, mk = styles[rests.index(name[1:]) % len(styles)] if len(keys) > 1 else ("-", "o")
        stats = g.groupby("depth")["first_last_ratio"].agg(["median", "min", "max"])
        label = ", ".join(map(str, name)) or "all"
        ax.plot(stats.index, stats["median"], marker=mk, ms=4, label=label, color=colour, ls=ls)
        ax.fill_between(stats.index, stats["min"], stats["max"], alpha=0.12, color=colour)
    ax.set_yscale("log")
    if len(r):
        min_log_span(ax, float(r["first_last_ratio"].min()), float(r["first_last_ratio"].max()))
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("hidden layers (depth)")
    depths = sorted(r["depth"].unique()) if len(r) else []
    if 0 < len(depths) <= 12:
        ax.set_xticks(depths)  # depths are whole numbers: tick each one swept, nothing between
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("first / last layer ||dL/dW|| (step 0)")
    ax.grid(True, which="both", alpha=0.3)
    if len(groups) > 1:
        ax.legend(fontsize=7, title=", ".join(keys) or None, title_fontsize=7,
                  loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # fmt: skip
    return fig


def remedy_ranking(ranking: pd.DataFrame) -> Figure:
    """Per remedy, best first from the top: the outcome (test loss on a log axis, or test
    accuracy) as the median with the range over seeds, failed remedies grey and labelled; and
    the diagnosis' findings score during training (lower is healthier)."""
    n = len(ranking)
    by_acc = ranking["test_accuracy"].notna().any()
    key = "test_accuracy" if by_acc else "test_loss"
    failed = (ranking["status"] == "failed").to_numpy()
    fig = Figure(figsize=(9, 0.32 * n + 1.5), layout="constrained")
    a1, a2 = fig.subplots(1, 2, sharey=True, width_ratios=(3, 1.2))
    y = np.arange(n)[::-1]
    med = ranking[key].astype(float).to_numpy()
    lo = ranking[key + "_min"].astype(float).to_numpy()
    hi = ranking[key + "_max"].astype(float).to_numpy()
    colour = [FAILED_COLOUR if f else "tab:blue" for f in failed]
    floor = 0.0
    if by_acc:
        a1.barh(y, med, color=colour, alpha=0.8)
        a1.set_xlim(0, 1.05)
        a1.set_xlabel("test accuracy (median; bar: range over seeds)")
    else:
        floor = np.nanmin(np.where(lo > 0, lo, np.nan)) / 2 if np.any(lo > 0) else 1e-3
        a1.barh(y, med - floor, left=floor, color=colour, alpha=0.8)
        a1.set_xscale("log")
        a1.set_xlabel("test loss, log scale (median; bar: range over seeds)")
    ok = np.isfinite(med) & np.isfinite(lo) & np.isfinite(hi)
    a1.errorbar(med[ok], y[ok], xerr=[med[ok] - lo[ok], hi[ok] - med[ok]], fmt="none",
                ecolor="black", lw=1, capsize=2)  # fmt: skip
    x_text = 0.02 if by_acc else floor * 1.1
    for yi in y[failed & ~np.isfinite(med)]:
        a1.text(x_text, yi, "no finite result", va="center", fontsize=7, color="#9a1b1b")
    base = ranking.loc[ranking["remedy"] == "baseline", key]
    if len(base) and np.isfinite(base.iloc[0]):
        a1.axvline(float(base.iloc[0]), color="black", ls="--", lw=0.8, label="baseline")
        a1.legend(fontsize=7, loc="lower right")
    names = ranking["remedy"].astype(str)
    labels = [f"{r}  (failed)" if f else r for r, f in zip(names, failed, strict=True)]
    a1.set_yticks(y, [f"{k}. {t}" for k, t in zip(ranking["rank"], labels, strict=True)])
    for tick, f in zip(a1.get_yticklabels(), failed, strict=True):
        tick.set_color("#9a1b1b" if f else "black")
    a2.barh(y, ranking["health"].astype(float), color=colour, alpha=0.8)
    a2.set_xlabel("findings score\n(2/error, 1/warning)")
    for a in (a1, a2):
        a.grid(True, axis="x", which="both", alpha=0.3)
    return fig


def loss_curves(steps: pd.DataFrame, title: str) -> Figure:
    """Training loss per step, one line per seed (log axis when the loss spans a decade)."""
    fig = Figure(figsize=(5, 3), layout="constrained")
    ax = fig.add_subplot()
    for seed, g in steps.groupby("seed"):
        ax.plot(g["step"], g["loss"], lw=1, alpha=0.8, label=f"seed {seed}")
    loss = steps["loss"].to_numpy(dtype=float)
    loss = loss[np.isfinite(loss) & (loss > 0)]
    if len(loss) and loss.max() > 10 * loss.min():
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (batch)")
    ax.set_title(title, fontsize=8)
    ax.grid(True, alpha=0.3)
    return fig


def svg(fig: Figure) -> str:
    """The figure as an inline ``<svg>`` element (no XML prolog, no date)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg") :]


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
        paths.append(out / name)
    return paths
