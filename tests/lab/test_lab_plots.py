"""The sweep's figures: drawn without pyplot, readable axes, legends off the data."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd

from gradprobe.lab import plots


def test_importing_the_lab_plots_keeps_a_notebook_users_backend():
    code = (
        "import matplotlib; matplotlib.use('pdf'); import gradprobe.lab.plots, "
        "gradprobe.lab.report, gradprobe.lab.sweep; print(matplotlib.get_backend())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)  # fmt: skip
    assert out.stdout.strip() == "pdf"


def _ranking() -> pd.DataFrame:
    rows = [("tanh", 0.35, "ok"), ("baseline", 1.31, "ok"), ("residual", 773.0, "failed"),
            ("relu_he", float("nan"), "failed")]  # fmt: skip
    return pd.DataFrame(
        [dict(rank=i + 1, remedy=n, status=s, test_loss=v, test_loss_min=v, test_loss_max=v,
              test_accuracy=float("nan"), test_accuracy_min=float("nan"),
              test_accuracy_max=float("nan"), health=0.0) for i, (n, v, s) in enumerate(rows)]
    )  # fmt: skip


def test_remedy_ranking_has_a_log_loss_axis_and_marks_failed_remedies():
    fig = plots.remedy_ranking(_ranking())
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"  # 773 no longer hides 0.35
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["1. tanh", "2. baseline", "3. residual  (failed)", "4. relu_he  (failed)"]
    assert any(t.get_text() == "no finite result" for t in ax.texts)


def test_ratio_vs_depth_puts_fifteen_lines_in_distinct_styles_beside_the_axes():
    rows = []
    for a in ("sigmoid", "relu", "tanh", "gelu", "selu"):
        for init in ("glorot_uniform", "he_uniform", "lecun_normal"):
            for depth in (2, 4):
                rows.append(dict(activation=a, init=init, depth=depth, status="complete",
                                 first_last_ratio=0.5 / depth))  # fmt: skip
    fig = plots.ratio_vs_depth(pd.DataFrame(rows))
    ax = fig.axes[0]
    styles = {(ln.get_color(), ln.get_linestyle(), ln.get_marker()) for ln in ax.lines[:15]}
    assert len(styles) == 15
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # beside the data, not over it
    lo, hi = ax.get_ylim()
    assert hi / lo >= 99  # a flat line looks flat: at least two decades


def test_ratio_vs_depth_ticks_whole_depths_only():
    rows = [dict(depth=d, seed=s, status="complete", first_last_ratio=0.5**d)
            for d in (2, 4) for s in (0, 1)]  # fmt: skip
    fig = plots.ratio_vs_depth(pd.DataFrame(rows))
    fig.canvas.draw()
    ticks = [t for t in fig.axes[0].get_xticks() if 2 <= t <= 4]
    assert ticks == [2, 4]  # was 2.00, 2.25, ..., 4.00: depths that cannot exist


def test_sweep_report_tables_scroll_in_their_box_and_labels_wrap_per_setting():
    from gradprobe.lab import report

    cell = dict(label="activation=sigmoid depth=8 init=glorot_uniform", seeds=2,
                ratio_median=1e-5, ratio_min=1e-6, ratio_max=1e-4, decay_per_layer=0.2,
                test_loss=0.7, test_accuracy=0.5, findings="error:vanishing,warning:x",
                failed_seeds=0)  # fmt: skip
    summary = dict(data="d", task="binary", status="complete", finished=1, cells=1, skipped=0,
                   seeds=[0, 1], sweep_dir="s", cells_summary=[cell])  # fmt: skip
    html = report.render(summary, pd.DataFrame({"depth": [8]}), None)
    assert html.count('<div class="scroll"><table>') == 1  # a wide table scrolls in its box
    assert "activation=sigmoid<br>depth=8<br>init=glorot_uniform" in html
    assert "error:vanishing<br>warning:x" in html and 'name="viewport"' in html
