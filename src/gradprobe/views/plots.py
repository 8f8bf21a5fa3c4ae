"""Plots people can trust: log scale, layers in depth order, labelled from input to output.

Each function takes record tables (or a :class:`~gradprobe.run.Run`) and returns a
:class:`matplotlib.figure.Figure` built without pyplot (no global state, no backend change: a
notebook keeps its own). Layouts are fixed (no constrained layout: it costs more than the
drawing), legends sit above the axes, off the data, and log axes always show at least
:data:`MIN_DECADES` decades, so a flat line looks flat. :func:`render_run_figures` renders a
run's figures once, to PNG bytes, for ``plots/`` and the report alike. Nothing here imports torch
or TensorFlow.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, Locator, MaxNLocator, NullLocator

from gradprobe.records import weight_rows
from gradprobe.run import Run, variant_dir

MIN_DECADES = 2.0
"""A log axis shows at least this many powers of ten."""
DPI = 110
WIDTH, HEIGHT = 5.2, 3.6
FS_TICK, FS_LABEL, FS_LEGEND, FS_TITLE = 8.5, 9.5, 8.5, 10.5
MAX_EPOCH_LINES = 6
_PALETTE = [colormaps["tab10"](i) for i in range(10)]


def depth_labels(n: int) -> list[str]:
    """Tick labels for ``n`` layers: '1\\n(input)', '2', ..., 'n\\n(output)'."""
    labels = [str(i + 1) for i in range(n)]
    if n:
        labels[0] += "\n(input)"
        labels[-1] += "\n(output)" if n > 1 else " (output)"
    return labels


def _positive(values: Any) -> np.ndarray:
    """Zeros and non-finite values cannot sit on a log axis: show them as gaps."""
    v = np.asarray(values, dtype=float)
    return np.where(np.isfinite(v) & (v > 0), v, np.nan)


def colors(names: Sequence[str]) -> dict[str, Any]:
    """One distinct colour per variant, the same in every figure of a run."""
    return {n: _PALETTE[i % len(_PALETTE)] for i, n in enumerate(names)}


def figure(
    title: str = "", legend_rows: int = 0, *, width: float = WIDTH, height: float = HEIGHT
) -> tuple[Figure, Axes]:
    """A figure with one axes in a fixed frame: room for the title and ``legend_rows`` legend
    rows above the axes, tick labels below and left."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    top_in = (0.38 if title else 0.1) + 0.22 * legend_rows + (0.08 if legend_rows else 0)
    left, bottom, right = 0.72 / width, 0.62 / height, 0.15 / width
    top = 1 - top_in / height
    ax = fig.add_axes((left, bottom, 1 - left - right, top - bottom))
    if title:
        fig.text(0.5, 1 - 0.08 / height, title, ha="center", va="top", fontsize=FS_TITLE)
    return fig, ax


def legend_rows(n: int, ncol: int = 3) -> int:
    return math.ceil(n / ncol) if n else 0


def legend_above(ax: Axes, ncol: int = 3) -> None:
    """The legend in the band above the axes (never over the data)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(
            handles,
            labels,
            loc="lower left",
            bbox_to_anchor=(0.0, 1.01, 1.0, 0.1),
            mode="expand",
            ncol=min(ncol, len(handles)),
            fontsize=FS_LEGEND,
            frameon=False,
            borderaxespad=0.0,
            handlelength=1.6,
        )


def min_span(ax: Axes, values: Any, decades: float = MIN_DECADES) -> None:
    """Widen a log axis to at least ``decades`` powers of ten around the data's geometric
    centre (a relu gradient varying 3x must not fill the axis like 7 orders of magnitude)."""
    v = _positive(np.asarray(values, dtype=float).ravel())
    v = v[np.isfinite(v)]
    if not v.size:
        return
    lo, hi = float(v.min()), float(v.max())
    if math.log10(hi / lo) >= decades:
        ax.set_ylim(lo / 1.5, hi * 1.5)
        return
    centre = math.sqrt(lo * hi)
    half = 10 ** (decades / 2)
    ax.set_ylim(centre / half, centre * half)


def _tick(v: float, _pos: Any = None) -> str:
    if 1e-3 <= v < 1e4:
        return f"{v:g}"
    return f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e").replace("e+", "e")


class LogTicks(Locator):
    """Ticks of a log axis: 1, 2, 5 per decade over a short span, else powers of ten, every
    decade or every few, never more than about seven."""

    def __call__(self) -> list[float]:
        lo, hi = sorted(self.axis.get_view_interval()) if self.axis else (1.0, 10.0)
        return self.tick_values(lo, hi)

    def tick_values(self, vmin: float, vmax: float) -> list[float]:
        if not (vmin > 0 and vmax > vmin and math.isfinite(vmax)):
            return []
        a, b = math.floor(math.log10(vmin)), math.ceil(math.log10(vmax))
        if b - a <= 2:
            ticks = [m * 10.0**k for k in range(a, b + 1) for m in (1, 2, 5)]
        else:
            step = max(1, math.ceil((b - a) / 6))
            ticks = [10.0**k for k in range(a - a % step, b + 1, step)]
        return [t for t in ticks if vmin <= t <= vmax]


def log_y(ax: Axes) -> None:
    """A log y axis with plain labels (1e-7; no mathtext to typeset) and no minor ticks: the
    cheap kind to draw."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogTicks())
    ax.yaxis.set_major_formatter(FuncFormatter(_tick))
    ax.yaxis.set_minor_locator(NullLocator())


def _layer_axis(
    ax: Axes, n_layers: int, ylabel: str, log: bool = True, of: int | None = None
) -> None:
    """x: layers 1..n_layers of a net of ``of`` layers (default n_layers): only the net's last
    layer is labelled output."""
    if log:
        log_y(ax)
    ax.set_xticks(range(n_layers), depth_labels(of or n_layers)[:n_layers], fontsize=FS_TICK)
    ax.set_xlabel("layer (input \u2192 output)", fontsize=FS_LABEL)
    ax.set_ylabel(ylabel, fontsize=FS_LABEL)
    ax.tick_params(axis="y", labelsize=FS_TICK)
    ax.grid(True, which="major", alpha=0.3)


def _step_norms(w: pd.DataFrame, step: int, column: str = "grad_norm") -> np.ndarray:
    return w[w["step"] == step].sort_values("depth")[column].to_numpy(dtype=float)


def shown_epochs(steps_of: Sequence[int], epoch_of: Mapping[int, int]) -> list[tuple[int, int]]:
    """(epoch, its first recorded step), at most MAX_EPOCH_LINES of them: the first, the last
    and evenly spaced ones between."""
    first: dict[int, int] = {}
    for s in sorted(steps_of):
        first.setdefault(int(epoch_of.get(int(s), 0)), int(s))
    items = sorted(first.items())
    if len(items) <= MAX_EPOCH_LINES:
        return items
    keep = np.unique(np.linspace(0, len(items) - 1, MAX_EPOCH_LINES).round().astype(int))
    return [items[i] for i in keep]


def by_depth_per_epoch(
    grid: pd.DataFrame, epoch_of: Mapping[int, int], ylabel: str, title: str = ""
) -> Figure:
    """One line per shown epoch (its first recorded step) of a step x depth grid, log scale."""
    shown = shown_epochs(list(grid.index), epoch_of)
    fig, ax = figure(title, legend_rows(len(shown)))
    cmap = colormaps["viridis"]
    drawn = []
    for i, (epoch, s) in enumerate(shown):
        values = _positive(grid.loc[s].to_numpy())
        drawn.append(values)
        color = cmap(0.9 * i / max(1, len(shown) - 1))
        ax.plot(
            range(len(values)),
            values,
            marker="o",
            ms=3.5,
            color=color,
            label=f"epoch {epoch + 1} (step {s})",
        )
    _layer_axis(ax, grid.shape[1], ylabel)
    if drawn:
        min_span(ax, np.concatenate(drawn))
    legend_above(ax)
    return fig


def epoch_lines(params: pd.DataFrame, steps: pd.DataFrame, title: str) -> Figure:
    """The notebooks' figure done right: weight-gradient norm by layer, one line per epoch
    (each epoch shown by its first recorded step; at most MAX_EPOCH_LINES epochs)."""
    w = weight_rows(params)
    grid = w.pivot_table(index="step", columns="depth", values="grad_norm", aggfunc="first")
    epoch_of = (
        dict(zip(steps["step"].astype(int), steps["epoch"].astype(int), strict=False))
        if len(steps) and "epoch" in steps
        else {}
    )
    return by_depth_per_epoch(grid, epoch_of, "||dL/dW|| (log)", title)


def step_chart(
    params: pd.DataFrame,
    layers: pd.DataFrame,
    column: str,
    ylabel: str,
    order: Sequence[str],
    title: str = "",
) -> Figure:
    """Every variant at its first recorded step: ``column`` (``grad_norm`` of the weights, or
    the layers' ``backward_norm``) by depth, one line per variant."""
    palette = colors(order)
    fig, ax = figure(title, legend_rows(len(order)))
    n, drawn = 0, []
    for name in order:
        if column == "grad_norm":
            t = weight_rows(params[params["variant"] == name])
        else:
            t = layers[layers["variant"] == name]
        if t.empty or column not in t:
            continue
        values = _positive(_step_norms(t, int(t["step"].min()), column))
        n = max(n, len(values))
        drawn.append(values)
        ax.plot(range(len(values)), values, marker="o", ms=3.5, color=palette[name], label=name)
    _layer_axis(ax, n, ylabel)
    if drawn:
        min_span(ax, np.concatenate(drawn))
    legend_above(ax)
    return fig


def variants_chart(
    params: pd.DataFrame, layers: pd.DataFrame, title: str, order: list[str] | None = None
) -> Figure:
    """All variants at their first recorded step: the weight-gradient norm by depth."""
    order = order or list(pd.unique(params["variant"]))
    return step_chart(params, layers, "grad_norm", "||dL/dW|| (log)", order, title)


def heatmap(params: pd.DataFrame, title: str) -> Figure:
    """Layer x step heatmap of the weight-gradient norm (log colour scale)."""
    w = weight_rows(params)
    grid = w.pivot_table(index="depth", columns="step", values="grad_norm", aggfunc="first")
    fig = Figure(figsize=(WIDTH, HEIGHT), dpi=DPI)
    ax = fig.add_axes((0.2, 0.15, 0.58, 0.72 if title else 0.8))
    cax = fig.add_axes((0.81, 0.15, 0.03, 0.72 if title else 0.8))
    if title:
        fig.text(0.5, 0.985, title, ha="center", va="top", fontsize=FS_TITLE)
    if grid.empty:
        ax.text(0.5, 0.5, "no gradients recorded", ha="center", va="center")
        cax.set_axis_off()
        return fig
    data = _positive(grid.to_numpy())
    finite = data[np.isfinite(data)]
    norm = None
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        if hi / lo < 10**MIN_DECADES:
            c = math.sqrt(lo * hi)
            lo, hi = c / 10 ** (MIN_DECADES / 2), c * 10 ** (MIN_DECADES / 2)
        norm = LogNorm(vmin=lo, vmax=hi)
    steps = grid.columns.to_numpy()
    width = float(steps[1] - steps[0]) if len(steps) > 1 else 1.0
    extent = (float(steps[0]) - width / 2, float(steps[-1]) + width / 2, len(grid) - 0.5, -0.5)
    im = ax.imshow(
        data, aspect="auto", cmap="magma", norm=norm, interpolation="nearest", extent=extent
    )
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
    ax.tick_params(axis="x", labelsize=FS_TICK)
    labels = [s.replace("\n", " ") for s in depth_labels(len(grid))]
    ax.set_yticks(range(len(grid)), labels, fontsize=FS_TICK)
    ax.set_ylabel("layer (input at top)", fontsize=FS_LABEL)
    ax.set_xlabel("step", fontsize=FS_LABEL)
    cb = fig.colorbar(im, cax=cax)
    cb.ax.yaxis.set_major_locator(LogTicks())
    cb.ax.yaxis.set_major_formatter(FuncFormatter(_tick))
    cb.ax.yaxis.set_minor_locator(NullLocator())
    cb.set_label("||dL/dW|| (log)", fontsize=FS_LABEL)
    cb.ax.tick_params(labelsize=FS_TICK)
    return fig


def first_layer_chart(first: pd.DataFrame, title: str) -> Figure:
    """True first-layer gradient of every recorded step against the notebook's
    (W_0 - W_t)/lr estimate, per variant."""
    names = list(pd.unique(first["variant"]))
    palette = colors(names)
    fig, ax = figure(title, legend_rows(len(names) + 2, 2), height=HEIGHT + 0.4)
    drawn = []
    for name in names:
        f = first[first["variant"] == name]
        true = _positive(f["true_mean_abs_grad"].to_numpy())
        est = _positive(f["cumulative_estimate_mean_abs"].to_numpy())
        drawn += [true, est]
        ax.plot(f["step"], true, color=palette[name], label=name)
        ax.plot(f["step"], est, ls="--", color=palette[name])
    ax.plot([], [], color="grey", label="true mean |dL/dW1|")
    ax.plot([], [], color="grey", ls="--", label="notebook's |W0 - Wt| / lr")
    log_y(ax)
    ax.set_xlabel("step", fontsize=FS_LABEL)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("mean |value| (log)", fontsize=FS_LABEL)
    ax.tick_params(labelsize=FS_TICK)
    ax.grid(True, which="major", alpha=0.3)
    if drawn:
        min_span(ax, np.concatenate(drawn))
    legend_above(ax, 2)
    return fig


def constant_accuracies(run: Run) -> tuple[float, float] | None:
    """The test accuracies of always predicting one class (both classes), for binary tasks."""
    p = run.config.get("data", {}).get("chance_test_accuracy")
    return None if p is None else (1 - p, p)


def training_chart(run: Run, title: str = "") -> Figure:
    """The outcome after every epoch (0: before training): test loss (regression, log) or test
    accuracy (classification), one bold line per variant for the watched seed and a thin one
    for every other seed; dotted, what a network that learned nothing scores (the mean
    predictor, or always the same class)."""
    epochs = run.table("epochs")
    names = run.variants or sorted(set(epochs.get("variant", [])))
    palette = colors(names)
    accuracy = "test_accuracy" in epochs and epochs["test_accuracy"].notna().any()
    column = "test_accuracy" if accuracy else "test_loss"
    watched_seed = run.config.get("train", {}).get("seed", 0)
    baseline = run.config.get("data", {}).get("baseline_test_loss")
    constant = constant_accuracies(run) if accuracy else None
    seeds = sorted(set(epochs["seed"])) if "seed" in epochs and len(epochs) else [watched_seed]
    entries = len(names) + (len(seeds) > 1) + (constant is not None or baseline is not None)
    fig, ax = figure(title, legend_rows(entries))
    drawn = []
    for name in names:
        e = epochs[epochs["variant"] == name] if len(epochs) else epochs
        if e.empty or column not in e:
            continue
        for seed in seeds:
            f = e[e["seed"] == seed] if "seed" in e else e
            mine = seed == watched_seed
            values = f[column].to_numpy(dtype=float)
            drawn.append(values)
            ax.plot(
                f["epoch"].to_numpy() + 1,
                values,
                color=palette[name],
                lw=2.0 if mine else 0.8,
                alpha=1.0 if mine else 0.45,
                marker="o" if mine and len(f) <= 12 else None,
                ms=3,
                label=name if mine else None,
                zorder=3 if mine else 2,
            )
    if len(seeds) > 1:
        ax.plot([], [], color="grey", lw=0.8, alpha=0.6, label=f"other seeds ({len(seeds) - 1})")
    if constant is not None:
        lo, hi = sorted(constant)
        ax.axhspan(lo, hi, color="grey", alpha=0.12, lw=0)
        ax.axhline(hi, color="black", ls=":", lw=1.0, label=f"one class always: {lo:.2g}-{hi:.2g}")
        ax.axhline(lo, color="black", ls=":", lw=1.0)
    elif baseline is not None:
        ax.axhline(baseline, color="black", ls=":", lw=1.2, label=f"mean predictor: {baseline:.3g}")
        drawn.append(np.array([baseline]))
    ax.set_xlabel("epoch (0: before training)", fontsize=FS_LABEL)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=FS_TICK)
    ax.grid(True, alpha=0.3)
    if accuracy:
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("test accuracy", fontsize=FS_LABEL)
    else:
        log_y(ax)
        ax.set_ylabel("test loss (MSE, log)", fontsize=FS_LABEL)
        if drawn:
            min_span(ax, np.concatenate(drawn), 1.0)
    legend_above(ax)
    return fig


def activation_health(
    layers: pd.DataFrame, order: Sequence[str], limits: tuple[float, float], title: str = ""
) -> Figure:
    """Saturated (sigmoid/tanh) or dead (ReLU) fraction by layer, per variant: first recorded
    step solid, last dashed; dotted: the diagnosis thresholds."""
    palette = colors(order)
    lines: list[tuple[str, str, np.ndarray, np.ndarray]] = []
    for name in order:
        lay = layers[layers["variant"] == name]
        for col, what in (("saturated_frac", "saturated"), ("dead_frac", "dead")):
            if col not in lay or lay[col].isna().all():
                continue
            grid = lay.pivot_table(index="step", columns="depth", values=col, aggfunc="first")
            grid = grid.dropna(axis=1, how="all")
            if grid.empty:
                continue
            lines.append((name, what, grid.iloc[0].to_numpy(), grid.iloc[-1].to_numpy()))
    fig, ax = figure(title, legend_rows(len(lines) + 1))
    n = max((len(first) for _, _, first, _ in lines), default=0)  # layers with an activation
    for name, what, first, last in lines:
        x = range(len(first))
        ax.plot(x, first, marker="o", ms=3, color=palette[name], label=f"{name}: {what}")
        ax.plot(x, last, ls="--", color=palette[name])
    if lines:
        ax.plot([], [], ls="--", color="grey", label="last recorded step")
    for limit in limits:
        ax.axhline(limit, color="grey", lw=0.8, ls=":")
    ax.set_ylim(-0.03, 1.03)
    total = int(layers["depth"].max()) + 1 if len(layers) else n
    _layer_axis(ax, n, "fraction of units", log=False, of=total)
    if lines:
        legend_above(ax)
    else:
        ax.text(0.5, 0.5, "no sigmoid/tanh/ReLU activation recorded", ha="center", va="center")
    return fig


def update_ratios(params: pd.DataFrame, order: Sequence[str], title: str = "") -> Figure:
    """||W_after - W_before|| / ||W|| by layer: median over recorded steps, per variant; the
    grey line at 1e-3 is the usual healthy size."""
    palette = colors(order)
    fig, ax = figure(title, legend_rows(len(order)))
    n, drawn = 0, []
    for name in order:
        w = weight_rows(params[params["variant"] == name])
        if w.empty or "update_ratio" not in w or w["update_ratio"].isna().all():
            continue
        med = _positive(w.groupby("depth")["update_ratio"].median().to_numpy(dtype=float))
        n = max(n, len(med))
        drawn.append(med)
        ax.plot(range(len(med)), med, marker="o", ms=3.5, color=palette[name], label=name)
    ax.axhline(1e-3, color="grey", lw=0.8)
    _layer_axis(ax, n, "median update / weight (log)")
    if drawn:
        min_span(ax, np.concatenate([*drawn, [1e-3]]))
    legend_above(ax)
    return fig


_PREDICTED: dict[tuple[str, str], Any] = {}


def theory_prediction(run: Run, variant: str) -> Any:
    """The mean-field prediction for one of the run's MLP variants, or None where it does not
    apply (see :func:`gradprobe.theory.runs.predict_variant`). Computed once per run config
    and variant: the theory chart and the report's theory box ask for the same one."""
    from gradprobe.theory.runs import predict_variant

    key = (json.dumps(run.config, sort_keys=True, default=str), variant)
    if key not in _PREDICTED:
        if len(_PREDICTED) >= 64:
            _PREDICTED.clear()
        _PREDICTED[key] = predict_variant(run.config, variant)
    return _PREDICTED[key]


def measured_per_example(params: pd.DataFrame) -> np.ndarray:
    """Per-example weight-gradient RMS of the first recorded step, input to output, last = 1."""
    w = weight_rows(params).dropna(subset=["pe_grad_rms"])
    if w.empty:
        return np.array([])
    first = w[w["step"] == w["step"].min()].sort_values("depth")
    v = first["pe_grad_rms"].to_numpy(dtype=float)
    return v / v[-1] if v[-1] > 0 else v


def theory_chart(run: Run, title: str = "") -> Figure | None:
    """Predicted (mean-field theory, with its seed-to-seed band) against measured per-example
    weight-gradient norms at the first step, each normalised so the readout is 1."""
    params = run.table("params")
    palette = colors(run.variants)
    pairs = []
    for name in run.variants:
        pred = theory_prediction(run, name)
        meas = measured_per_example(params[params["variant"] == name])
        if pred is not None and len(meas) == len(pred.grad_norm_by_depth):
            pairs.append((name, pred, meas))
    if not pairs:
        return None
    fig, ax = figure(title, legend_rows(len(pairs) + 2, 2), height=HEIGHT + 0.2)
    n, drawn = 0, []
    for name, pred, meas in pairs:
        x = np.arange(len(meas))
        n = max(n, len(meas))
        c = palette[name]
        ax.plot(x, pred.grad_norm_by_depth, ls="--", color=c, label=name)
        lo, hi = (np.asarray(b, dtype=float) for b in pred.grad_norm_band)
        ax.fill_between(x, lo, hi, color=c, alpha=0.15, lw=0)
        ax.plot(x, _positive(meas), marker="o", ms=4, ls="none", color=c)
        drawn += [_positive(meas), np.asarray(pred.grad_norm_by_depth, dtype=float), lo, hi]
    ax.plot([], [], ls="--", color="grey", label="predicted (band: seed to seed)")
    ax.plot([], [], marker="o", ls="none", color="grey", label="measured")
    _layer_axis(ax, n, "per-example ||dL/dW|| / last (log)")
    min_span(ax, np.concatenate(drawn))
    legend_above(ax, 2)
    return fig


def run_figures(run: Run, thresholds: Any = None) -> dict[str, Figure]:
    """Every figure of a run, by file name (``plots/NAME``), in the report's order."""
    from gradprobe.diagnosis import Thresholds

    th = thresholds or Thresholds()
    params, layers = run.table("params"), run.table("layers")
    steps, first = run.table("steps"), run.table("firstlayer")
    exp = str(run.config.get("experiment", "run"))
    order = run.variants
    figs: dict[str, Figure] = {}
    if not run.table("epochs").empty and "test_loss" in run.table("epochs"):
        figs["training.png"] = training_chart(run, f"{exp}: outcome on the test split")
    if not params.empty:
        figs["variants.png"] = variants_chart(
            params, layers, f"{exp}: weight gradients at the first step", order
        )
    if not layers.empty and "backward_norm" in layers and layers["backward_norm"].notna().any():
        figs["backward.png"] = step_chart(
            params,
            layers,
            "backward_norm",
            "||dL/dh|| (log)",
            order,
            f"{exp}: backward signal at the first step",
        )
    theory = theory_chart(run, f"{exp}: theory at initialisation vs measured")
    if theory is not None:
        figs["theory.png"] = theory
    if len(first) and "true_mean_abs_grad" in first and exp == "classification":
        figs["first-layer.png"] = first_layer_chart(
            first, f"{exp}: true first-layer gradient vs the notebook's estimate"
        )
    for name in order:
        p = params[params["variant"] == name]
        s = steps[steps["variant"] == name] if len(steps) else steps
        slug = variant_dir(name)
        figs[f"epochs-{slug}.png"] = epoch_lines(p, s, f"{name}: ||dL/dW|| by layer, per epoch")
        figs[f"heatmap-{slug}.png"] = heatmap(p, f"{name}: ||dL/dW||, layer x step")
    if not layers.empty:
        figs["activations.png"] = activation_health(
            layers, order, (th.saturated_high, th.dead_high), f"{exp}: saturated and dead units"
        )
    if not params.empty:
        figs["updates.png"] = update_ratios(params, order, f"{exp}: update size by layer")
    return figs


PNG_COMPRESSION = 3
"""zlib level of the PNGs: 3 encodes in 2/3 of the time of PIL's default 6 for 2% more bytes."""


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes (rendered once)."""
    buf = io.BytesIO()
    fig.savefig(
        buf,
        format="png",
        dpi=DPI,
        metadata={"Software": None},
        pil_kwargs={"compress_level": PNG_COMPRESSION},
    )
    return buf.getvalue()


def render_run_figures(run: Run, thresholds: Any = None) -> dict[str, bytes]:
    """Every figure of a run rendered once to PNG, by file name."""
    return {name: png(fig) for name, fig in run_figures(run, thresholds).items()}


def save_run_plots(run: Run, rendered: Mapping[str, bytes] | None = None) -> list[Path]:
    """Write a run's PNGs into ``RUN_DIR/plots`` (rendered now unless given) and return their
    paths; PNGs of figures the run no longer has are removed."""
    rendered = rendered if rendered is not None else render_run_figures(run)
    out = run.path / "plots"
    out.mkdir(exist_ok=True)
    for old in out.glob("*.png"):
        if old.name not in rendered:
            old.unlink()
    paths = []
    for name, data in rendered.items():
        path = out / name
        path.write_bytes(data)
        paths.append(path)
    return paths
