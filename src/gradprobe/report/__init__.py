"""The HTML report: one self-contained file with the verdict first, then the evidence.

No CDN, font or script: styles are inline, charts are the run's PNGs (the bytes ``plots/`` holds,
rendered once) inlined as ``data:`` URIs, and a Content-Security-Policy forbids every load.
Every string from the run is escaped by Jinja2's autoescaping.

Example::

    >>> import gradprobe
    >>> from gradprobe.report import write_report
    >>> write_report(gradprobe.load_run("runs/demo"))          # doctest: +SKIP
    PosixPath('runs/demo/report.html')
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import jinja2

from gradprobe.diagnosis import Finding, Thresholds
from gradprobe.report.context import build
from gradprobe.run import Run, load_run

REPORT_NAME = "report.html"


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("gradprobe.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_report(
    run: Run | str | Path,
    *,
    now: datetime | None = None,
    thresholds: Thresholds | None = None,
    figures: Mapping[str, bytes] | None = None,
    findings: list[Finding] | None = None,
) -> str:
    """The report of ``run`` (a Run or a run directory) as an HTML string, stamped ``now``.

    ``figures``: the run's PNGs by file name, as :func:`gradprobe.views.plots.render_run_figures`
    returns them (rendered here when not given); ``findings``: the run's diagnosis under
    ``thresholds`` (computed here when not given)."""
    run = run if isinstance(run, Run) else load_run(run)
    context = build(run, now or datetime.now(UTC), thresholds, figures, findings)
    return _environment().get_template("report.html.j2").render(**context)


def write_report(
    run: Run | str | Path,
    path: str | Path | None = None,
    *,
    now: datetime | None = None,
    thresholds: Thresholds | None = None,
    figures: Mapping[str, bytes] | None = None,
    findings: list[Finding] | None = None,
) -> Path:
    """Write the report of ``run`` to ``path`` (default ``RUN_DIR/report.html``); returns it."""
    run = run if isinstance(run, Run) else load_run(run)
    out = Path(path) if path is not None else run.path / REPORT_NAME
    html = render_report(run, now=now, thresholds=thresholds, figures=figures, findings=findings)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)
    return out


__all__ = ["REPORT_NAME", "render_report", "write_report"]
