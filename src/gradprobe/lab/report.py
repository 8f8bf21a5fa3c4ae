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
COLUMNS: tuple[str, ...] = ("cell", "seeds", "first/last ratio (range)", "decay per layer")
COLUMNS += ("test loss", "test accuracy", "findings", "failed")
RANK_COLUMNS = ("rank", "remedy", "what", "test_loss", "test_accuracy", "health", "decay_during")
RANK_HEADERS: tuple[str, ...] = ("rank", "remedy", "what", "test loss", "test accuracy")
RANK_HEADERS += ("findings score",)
RANK_HEADERS += ("gradient x/layer in training",)
SPARSE = ("test_loss", "test_accuracy")  # left out when no remedy has it (e.g. regression)


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _cell_row(c: dict[str, Any]) -> list[list[str]]:
    """One table row; each cell a list of lines (a label's settings, one per line)."""
    span = f"({_fmt(c.get('ratio_min'))} to {_fmt(c.get('ratio_max'))})"
    return [
        str(c.get("label", "")).split(" "),
        [_fmt(c.get("seeds"))],
        [_fmt(c.get("ratio_median")), span],
        [_fmt(c.get("decay_per_layer"))],
        [_fmt(c.get("test_loss"))],
        [_fmt(c.get("test_accuracy"))],
        [f for f in str(c.get("findings") or "-").split(",") if f],
        [_fmt(c.get("failed_seeds"))],
    ]


def render(summary: dict[str, Any], results: pd.DataFrame, ranking: pd.DataFrame | None) -> str:
    """The report as an HTML string."""
    charts = []
    if len(results) and results["depth"].nunique() > 1 and ranking is None:
        charts.append(
            ("First/last gradient ratio against depth", plots.svg(plots.ratio_vs_depth(results)))
        )
    if ranking is not None and len(ranking):
        charts.append(("Remedies ranked", plots.svg(plots.remedy_ranking(ranking))))
    cells = [_cell_row(c) for c in summary.get("cells_summary", [])]
    rank_rows: list[dict[str, Any]] = []
    rank_headers: list[str] = []
    if ranking is not None:
        keep = [
            i for i, c in enumerate(RANK_COLUMNS) if c not in SPARSE or ranking[c].notna().any()
        ]
        rank_headers = [RANK_HEADERS[i] for i in keep]
        cols = [RANK_COLUMNS[i] for i in keep]
        rank_rows = [
            {
                "cells": [_fmt(v) for v in row[:-2]],
                "reason": row[-2],
                "failed": row[-1] == "failed",
            }
            for row in ranking[cols + ["reason", "status"]].itertuples(index=False)
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
        rank_headers=rank_headers,
    )


def write(root: Path, summary: dict[str, Any], results: pd.DataFrame, ranking: Any) -> Path:
    """Write ``root/report.html`` atomically; returns its path."""
    out = root / REPORT_NAME
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render(summary, results, ranking), encoding="utf-8")
    tmp.replace(out)
    return out
