"""Plots people can trust: log scale, layers in depth order, labelled from input to output.

Each function takes record tables (or a :class:`~gradprobe.run.Run`) and returns a matplotlib
Figure; :func:`save_run_plots` writes a run's PNGs. Nothing here imports torch or TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from gradprobe.records import weight_rows  # noqa: E402
from gradprobe.run import Run, variant_dir  # noqa: E402


def depth_labels(n: int) -> list[str]:
    """Tick labels for ``n`` layers: '1\\n(input)', '2', ..., 'n\\n(output)'."""
    labels = [str(i + 1) for i in range(n)]
    if n:
        labels[0] += "\n(input)"
        labels[-1] += "\n(output)" if n > 1 else " (output)"
    return labels


def _positive(values: np.ndarray) -> np.ndarray:
    """Zeros and non-finite values cannot sit on a log axis: show them as gaps."""
    v = np.asarray(values, dtype=float)
    return np.where(np.isfinite(v) & (v > 0), v, np.nan)


def _log_axis(ax: plt.Axes, n_layers: int, ylabel: str) -> None:
    ax.set_yscale("log")
    ax.set_xticks(range(n_layers), depth_labels(n_layers))
    ax.set_xlabel("layer (input \u2192 output)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)


def _step_norms(w: pd.DataFrame, step: int) -> np.ndarray:
    return w[w["step"] == step].sort_values("depth")["grad_norm"].to_numpy(dtype=float)


def epoch_lines(params: pd.DataFrame, steps: pd.DataFrame, title: str) -> Figure:
    """The notebooks' figure done right: one line per epoch of weight-gradient norm by layer.

    Each epoch is shown by its first recorded step.
    """
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    w = weight_rows(params)
    recorded = set(w["step"].unique())
    epoch_of = dict(zip(steps["step"], steps["epoch"], strict=False)) if len(steps) else {}
    shown: dict[int, int] = {}
    for s in sorted(recorded):
        shown.setdefault(int(epoch_of.get(s, 0)), int(s))
    n = 0
    cmap = plt.get_cmap("viridis")
    for i, (epoch, s) in enumerate(sorted(shown.items())):
        norms = _step_norms(w, s)
        n = max(n, len(norms))
        color = cmap(i / max(1, len(shown) - 1))
        ax.plot(
            range(len(norms)),
            _positive(norms),
            marker="o",
            color=color,
            label=f"epoch {epoch + 1} (step {s})",
        )
    _log_axis(ax, n, "weight-gradient L2 norm (log)")
    ax.set_title(title)
    if shown:
        ax.legend(fontsize=8)
    return fig


def variants_chart(
    params: pd.DataFrame, layers: pd.DataFrame, title: str, order: list[str] | None = None
) -> Figure:
    """All variants at their first recorded step: weight-gradient norm and backward signal."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    n = 0
    for name in order or list(pd.unique(params["variant"])):
        w = weight_rows(params[params["variant"] == name])
        if w.empty:
            continue
        s = int(w["step"].min())
        norms = _step_norms(w, s)
        n = max(n, len(norms))
        line = a1.plot(range(len(norms)), _positive(norms), marker="o", label=name)[0]
        lay = layers[(layers["variant"] == name) & (layers["step"] == s)].sort_values("depth")
        if len(lay):
            a2.plot(
                range(len(lay)),
                _positive(lay["backward_norm"].to_numpy()),
                marker="s",
                color=line.get_color(),
                label=name,
            )
    _log_axis(a1, n, "weight-gradient L2 norm ||dL/dW|| (log)")
    _log_axis(a2, n, "backward signal ||dL/dh|| at layer output (log)")
    a1.set_title("weight gradients, first recorded step")
    a2.set_title("backward signal, first recorded step")
    for a in (a1, a2):
        if a.lines:
            a.legend(fontsize=8)
    fig.suptitle(title)
    return fig


def heatmap(params: pd.DataFrame, title: str) -> Figure:
    """Layer x step heatmap of the weight-gradient norm (log colour scale)."""
    w = weight_rows(params)
    grid = w.pivot_table(index="depth", columns="step", values="grad_norm", aggfunc="first")
    fig, ax = plt.subplots(figsize=(9, 0.35 * max(len(grid), 4) + 1.8), layout="constrained")
    if grid.empty:
        ax.text(0.5, 0.5, "no gradients recorded", ha="center", va="center")
        return fig
    data = _positive(grid.to_numpy())
    finite = data[np.isfinite(data)]
    norm = LogNorm(vmin=finite.min(), vmax=finite.max()) if finite.size else None
    steps = grid.columns.to_numpy()
    im = ax.imshow(data, aspect="auto", cmap="magma", norm=norm, interpolation="nearest")
    ticks = np.unique(np.linspace(0, len(steps) - 1, min(len(steps), 10)).round().astype(int))
    ax.set_xticks(ticks, [str(int(steps[i])) for i in ticks])
    ax.set_yticks(range(len(grid)), [s.replace("\n", " ") for s in depth_labels(len(grid))])
    ax.set_ylabel("layer (input at top)")
    ax.set_xlabel("step")
    fig.colorbar(im, ax=ax, label="weight-gradient L2 norm (log)")
    ax.set_title(title)
    return fig


def first_layer_chart(first: pd.DataFrame, title: str) -> Figure:
    """True first-layer gradient of every step against the notebook's (W_before-W_after)/lr."""
    fig, ax = plt.subplots(figsize=(11, 4.5), layout="constrained")
    for name in pd.unique(first["variant"]):
        f = first[first["variant"] == name]
        line = ax.plot(
            f["step"],
            _positive(f["true_mean_abs_grad"].to_numpy()),
            marker="o",
            label=f"{name}: true mean |dL/dW1|",
        )[0]
        ax.plot(
            f["step"],
            _positive(f["cumulative_estimate_mean_abs"].to_numpy()),
            ls="--",
            marker="x",
            color=line.get_color(),
            label=f"{name}: notebook estimate mean |W0 - Wt|/lr",
        )
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("mean |value| (log)")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.text(
        0.01,
        0.02,
        "Under Adam each step moves a weight by about lr, whatever the gradient's\n"
        "size, so the estimate stays near the number of steps while true gradients differ "
        "by orders of magnitude.",
        transform=ax.transAxes,
        fontsize=7,
        va="bottom",
    )
    return fig


def loss_chart(steps: pd.DataFrame, title: str) -> Figure:
    fig, ax = plt.subplots(figsize=(8, 4), layout="constrained")
    for name in pd.unique(steps["variant"]):
        f = steps[steps["variant"] == name]
        ax.plot(f["step"], f["loss"], marker="." if len(f) < 50 else None, label=name)
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("training loss")
    ax.grid(True, alpha=0.3)
    ax.set_title(title)
    if len(steps):
        ax.legend(fontsize=8)
    return fig


def save_run_plots(run: Run) -> list[Path]:
    """Write a run's PNGs into ``RUN_DIR/plots`` and return their paths."""
    out = run.path / "plots"
    out.mkdir(exist_ok=True)
    params, layers = run.table("params"), run.table("layers")
    steps, first = run.table("steps"), run.table("firstlayer")
    exp = run.config.get("experiment", "run")
    figures: dict[str, Figure] = {}
    for name in run.variants:
        p = params[params["variant"] == name]
        s = steps[steps["variant"] == name] if len(steps) else steps
        slug = variant_dir(name)
        figures[f"epochs-{slug}.png"] = epoch_lines(
            p, s, f"{exp} / {name}: gradient norm per layer, one line per epoch"
        )
        figures[f"heatmap-{slug}.png"] = heatmap(p, f"{exp} / {name}: gradient norm, layer x step")
    figures["variants.png"] = variants_chart(params, layers, f"{exp}: all variants", run.variants)
    if len(steps):
        figures["loss.png"] = loss_chart(steps, f"{exp}: training loss")
    if len(first) and "true_mean_abs_grad" in first and exp == "classification":
        figures["first-layer.png"] = first_layer_chart(
            first, f"{exp}: true first-layer gradient vs the notebook's estimate"
        )
    theory = theory_chart(run, f"{exp}: theory at initialisation vs measurement")
    if theory is not None:
        figures["theory.png"] = theory
    paths = []
    for fname, fig in figures.items():
        path = out / fname
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def theory_prediction(run: Run, variant: str) -> Any:
    """The mean-field prediction for one of the run's MLP variants, or None where it does not
    apply (see :func:`gradprobe.theory.runs.predict_variant`)."""
    from gradprobe.theory.runs import predict_variant

    return predict_variant(run.config, variant)


def measured_per_example(params: pd.DataFrame) -> np.ndarray:
    """Per-example weight-gradient RMS of the first recorded step, input to output, last = 1."""
    w = weight_rows(params).dropna(subset=["pe_grad_rms"])
    if w.empty:
        return np.array([])
    first = w[w["step"] == w["step"].min()].sort_values("depth")
    v = first["pe_grad_rms"].to_numpy(dtype=float)
    return v / v[-1] if v[-1] > 0 else v


def theory_chart(run: Run, title: str) -> Figure | None:
    """Predicted (mean-field theory, with its seed-to-seed band) against measured per-example
    weight-gradient norms at the first step, each normalised so the readout is 1."""
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    params = run.table("params")
    n, drawn = 0, 0
    for name in run.variants:
        pred = theory_prediction(run, name)
        meas = measured_per_example(params[params["variant"] == name])
        if pred is None or len(meas) != len(pred.grad_norm_by_depth):
            continue
        x = np.arange(len(meas))
        n = max(n, len(meas))
        line = ax.plot(x, pred.grad_norm_by_depth, ls="--", label=f"{name}: predicted")[0]
        lo, hi = (np.asarray(b, dtype=float) for b in pred.grad_norm_band)
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15)
        ax.plot(
            x,
            _positive(meas),
            marker="o",
            ls="none",
            color=line.get_color(),
            label=f"{name}: measured",
        )
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    _log_axis(ax, n, "per-example ||dL/dW|| / readout's (log)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.text(
        0.01,
        0.02,
        "band: seed-to-seed spread exp(+-sqrt(5 beta)), beta = sum of 1/width",
        transform=ax.transAxes,
        fontsize=7,
    )
    return fig
