"""The run's figures: drawn without pyplot, log axes that never exaggerate, rendered once."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
from matplotlib.figure import Figure

from gradprobe.run import load_run
from gradprobe.views import plots


def test_importing_the_views_leaves_a_notebook_users_backend_alone():
    """views.plots, views.phase and report.charts called matplotlib.use("Agg") on import."""
    code = (
        "import matplotlib; before = matplotlib.get_backend(); "
        "import gradprobe.views.plots, gradprobe.views.phase, gradprobe.report.charts, "
        "gradprobe.report; "
        "assert matplotlib.get_backend() == before, (before, matplotlib.get_backend()); "
        "import sys; assert 'matplotlib.pyplot' not in sys.modules"
    )
    env = {**os.environ, "MPLBACKEND": "svg"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr.decode()


def test_a_flat_line_on_a_log_axis_looks_flat():
    """A relu gradient varying 3x filled the whole axis like 7 orders of magnitude."""
    fig, ax = plots.figure()
    values = np.array([0.05, 0.1, 0.15])
    ax.plot(values)
    plots.log_y(ax)
    plots.min_span(ax, values)
    lo, hi = ax.get_ylim()
    assert math.log10(hi / lo) >= plots.MIN_DECADES - 1e-9
    assert lo < values.min() and hi > values.max()
    wide = np.array([1e-8, 1.0])
    plots.min_span(ax, wide)
    lo, hi = ax.get_ylim()
    assert lo <= 1e-8 and hi >= 1.0


def test_log_ticks_stay_few_and_plain():
    t = plots.LogTicks()
    assert len(t.tick_values(1e-9, 10.0)) <= 7
    assert t.tick_values(0.3, 3.0) == [0.5, 1.0, 2.0]
    assert plots._tick(1e-7) == "1e-7" and plots._tick(0.5) == "0.5"


def test_every_figure_is_a_plain_figure_with_its_legend_above_the_data(small_run):
    run = load_run(small_run)
    figs = plots.run_figures(run)
    assert {"training.png", "variants.png", "backward.png", "first-layer.png"} <= set(figs)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    for name, fig in figs.items():
        assert isinstance(fig, Figure) and fig.canvas.manager is None, name
        assert fig.get_layout_engine() is None, name  # a fixed layout: cheap to draw
        renderer = FigureCanvasAgg(fig).get_renderer()
        for ax in fig.axes:
            legend = ax.get_legend()
            if legend is not None:
                box = legend.get_window_extent(renderer)
                assert box.y0 >= ax.get_window_extent(renderer).y1 - 1, name  # above the axes
                assert box.y1 <= fig.bbox.y1, name  # and inside the figure


def test_variants_have_distinct_colours_in_every_figure(small_run):
    run = load_run(small_run)
    fig = plots.run_figures(run)["variants.png"]
    colours = [tuple(line.get_color()) for line in fig.axes[0].lines if line.get_label()[0] != "_"]
    assert len(colours) == len(set(colours)) == len(run.variants)


def test_save_run_plots_writes_the_rendered_bytes_and_drops_stale_pngs(small_run, tmp_path):
    import shutil

    dest = tmp_path / "run"
    shutil.copytree(small_run, dest)
    (dest / "plots").mkdir(exist_ok=True)
    (dest / "plots" / "loss.png").write_bytes(b"old")
    run = load_run(dest)
    rendered = plots.render_run_figures(run)
    paths = plots.save_run_plots(run, rendered)
    assert {p.name for p in paths} == set(rendered)
    assert not (dest / "plots" / "loss.png").exists()
    for p in paths:
        assert p.read_bytes() == rendered[p.name]


def test_the_phase_diagrams_star_is_drawn_whole_on_the_bias_free_edge():
    """At sigma_b^2 = 0 the star sat on the axes' edge and half of it was clipped away."""
    from gradprobe.views.phase import phase_diagram

    fig = phase_diagram("tanh", 1.0, 0.0, n=6)
    (star,) = [ln for ln in fig.axes[0].lines if ln.get_label() == "your configuration"]
    assert star.get_clip_on() is False and star.get_zorder() > 2


def test_the_activation_chart_calls_only_the_nets_last_layer_output(small_run):
    """With no activation on the output layer (California's linear readout) the last hidden
    layer was labelled '(output)'."""
    run = load_run(small_run)
    layers = run.table("layers")
    total = int(layers["depth"].max()) + 1
    linear = layers.copy()  # as if the readout had no activation: no fraction recorded there
    last = linear["depth"] == total - 1
    linear.loc[last, ["saturated_frac", "dead_frac"]] = float("nan")
    fig = plots.activation_health(linear, run.variants, (0.5, 0.25))
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == plots.depth_labels(total)[: total - 1]
    assert not any("output" in t for t in labels)
