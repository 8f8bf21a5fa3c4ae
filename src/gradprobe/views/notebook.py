"""Notebook display: a compact HTML summary with the findings, and ``plot()`` figures.

Works on anything the diagnosis takes -- a live Monitor, a loaded Run, a check result. Every
string from the records is escaped (Jinja2 autoescape).

Example::

    >>> from gradprobe.views.notebook import summary_html, plot
    >>> html = summary_html(monitor)      # doctest: +SKIP  (what Monitor._repr_html_ returns)
    >>> figures = plot(run)               # doctest: +SKIP  one line chart + heatmap per variant
"""

from __future__ import annotations

from typing import Any

import jinja2
import pandas as pd
from matplotlib.figure import Figure

from gradprobe.diagnosis import diagnose, verdict
from gradprobe.diagnosis.view import split

_TEMPLATE = jinja2.Environment(autoescape=True).from_string(
    """<div class="gradprobe-summary" style="font-family:system-ui,sans-serif;font-size:13px">
<strong>{{ title }}</strong> <span style="color:#57606a">{{ detail }}</span>
{% if partial %}<div style="color:#9a6700">partial run: {{ partial }}</div>{% endif %}
<table style="border-collapse:collapse;margin:4px 0">
{% for v in variants %}<tr>
<td style="padding:2px 8px 2px 0"><strong>{{ v.name or "model" }}</strong></td>
<td style="padding:2px 8px;color:{{ v.color }}">{{ v.verdict }}</td>
<td style="padding:2px 8px;color:#57606a">{{ v.shape }}</td></tr>
{% endfor %}</table>
{% if findings %}<ul style="margin:2px 0;padding-left:18px">
{% for f in findings %}<li><span style="color:{{ f.color }};font-weight:600">{{ f.severity }}</span>
<code>{{ f.code }}</code>{% if f.variant %} [{{ f.variant }}]{% endif %}: {{ f.summary }}
{% if f.remedy %}<br><span style="color:#57606a">try first: {{ f.remedy }}</span>{% endif %}</li>
{% endfor %}</ul>{% endif %}
</div>"""
)
_COLOR = {"error": "#cf222e", "warning": "#9a6700", "info": "#57606a", "ok": "#1a7f37"}


def _title(obj: Any) -> tuple[str, str, str]:
    config = getattr(obj, "config", None)
    if isinstance(config, dict):
        status = getattr(obj, "status", {}) or {}
        partial = (
            (status.get("message") or "did not finish") if getattr(obj, "partial", False) else ""
        )
        return (
            f"gradprobe run: {config.get('experiment', '')}",
            str(getattr(obj, "path", "")),
            partial,
        )
    model = getattr(obj, "model", None)
    name = type(model).__name__ if model is not None else type(obj).__name__
    return f"gradprobe: {name}", "", ""


def summary_html(obj: Any) -> str:
    """The HTML body of ``_repr_html_``: verdict per variant, then each finding in one line."""
    findings = diagnose(obj)
    title, path, partial = _title(obj)
    variants = []
    for rec in split(obj):
        mine = [f for f in findings if f.variant == rec.variant]
        worst = min(mine, key=lambda f: f.rank).severity if mine else "ok"
        variants.append(
            {
                "name": rec.variant,
                "verdict": verdict(mine),
                "color": _COLOR[worst],
                "shape": f"{len(rec.steps)} recorded steps, {len(rec.names)} layers",
            }
        )
    rows = [
        {
            "severity": f.severity,
            "color": _COLOR[f.severity],
            "code": f.code,
            "variant": f.variant,
            "summary": f.summary,
            "remedy": f.remedies[0].why if f.remedies else "",
        }
        for f in findings
    ]
    return _TEMPLATE.render(
        title=title, detail=path, partial=partial, variants=variants, findings=rows
    )


def plot(obj: Any) -> list[Figure]:
    """Per variant: gradient norm by depth (one line per epoch) and a layer x step heatmap."""
    from gradprobe.views.plots import epoch_lines, heatmap

    steps = obj.table("steps") if hasattr(obj, "tables") else pd.DataFrame()
    figures = []
    for rec in split(obj):
        if rec.params.empty:
            continue
        s = steps[steps["variant"] == rec.variant] if "variant" in steps and len(steps) else steps
        label = rec.variant or "model"
        figures.append(
            epoch_lines(
                rec.params, s if len(s) else pd.DataFrame(), f"{label}: gradient norm by layer"
            )
        )
        figures.append(heatmap(rec.params, f"{label}: gradient norm, layer x step"))
    return figures
