"""The HTML sweep report: one self-contained file (inline SVG charts, no script, no network);
every string from the sweep is escaped by Jinja2's autoescaping."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from gradprobe.lab import plots

REPORT_NAME = "report.html"
COLUMNS: tuple[str, ...] = ("label", "seeds", "ratio_median", "ratio_min", "ratio_max")
COLUMNS += ("decay_per_layer",)
COLUMNS += ("test_loss", "test_accuracy", "findings", "failed_seeds")
RANK_COLUMNS = ("rank", "remedy", "what", "test_loss", "test_accuracy", "health", "decay_during")
RANK_HEADERS: tuple[str, ...] = ("rank", "remedy", "what", "test loss", "test accuracy")
RANK_HEADERS += ("findings score",)
RANK_HEADERS += ("gradient x/layer in training",)


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def render(summary: dict[str, Any], results: pd.DataFrame, ranking: pd.DataFrame | None) -> str:
    """The report as an HTML string."""
    charts = []
    if len(results) and results["depth"].nunique() > 1:
        charts.append(
            ("First/last gradient ratio against depth", plots.svg(plots.ratio_vs_depth(results)))
        )
    if ranking is not None and len(ranking):
        charts.append(("Remedies ranked", plots.svg(plots.remedy_ranking(ranking))))
    cells = [[_fmt(c.get(k)) for k in COLUMNS] for c in summary.get("cells_summary", [])]
    rank_rows = []
    if ranking is not None:
        rank_rows = [
            {
                "cells": [_fmt(v) for v in row[:-2]],
                "reason": row[-2],
                "failed": row[-1] == "failed",
            }
            for row in ranking[list(RANK_COLUMNS) + ["reason", "status"]].itertuples(index=False)
        ]
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gradprobe.lab", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template("sweep.html.j2").render(
        s=summary,
        columns=COLUMNS,
        cells=cells,
        charts=charts,
        ranking=rank_rows,
        rank_headers=RANK_HEADERS,
    )


def write(root: Path, summary: dict[str, Any], results: pd.DataFrame, ranking: Any) -> Path:
    """Write ``root/report.html`` atomically; returns its path."""
    out = root / REPORT_NAME
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render(summary, results, ranking), encoding="utf-8")
    tmp.replace(out)
    return out
