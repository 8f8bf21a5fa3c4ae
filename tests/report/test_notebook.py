"""Notebook display of a run, a monitor and a check result: HTML summary and plot()."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
from matplotlib.figure import Figure

from gradprobe.run import load_run
from gradprobe.views.notebook import plot, summary_html

EVIL = "<script>alert(1)</script>"


def test_run_summary_has_verdicts_findings_and_escapes(small_run):
    html = summary_html(load_run(small_run))
    assert "deep-sigmoid" in html and "will not train well" in html and "vanishing" in html
    assert "<script" not in html


def test_monitor_summary_and_plot():
    torch = pytest.importorskip("torch")
    import gradprobe

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    with gradprobe.watch(model) as mon:
        model(torch.randn(16, 4)).pow(2).mean().backward()
        mon.step()
    html = summary_html(mon)
    assert "Sequential" in html and "healthy" in html
    figs = plot(mon)
    assert len(figs) == 2 and all(isinstance(f, Figure) for f in figs)
    plt.close("all")


def test_run_plot_gives_two_figures_per_variant(small_run):
    figs = plot(load_run(small_run))
    assert len(figs) == 4
    plt.close("all")


def test_layer_names_are_escaped():
    import pandas as pd

    from gradprobe.records import PARAM_STATS, conform, empty_frame

    row = {"step": 0, "layer": EVIL, "param": "weight", "depth": 0, "numel": 4}
    row |= {c: 1.0 for c in PARAM_STATS} | {"grad_nonfinite": 1}  # a non_finite finding
    html = summary_html((conform(pd.DataFrame([row]), "params"), empty_frame("layers")))
    assert "non_finite" in html and "<script" not in html and "&lt;script&gt;" in html
