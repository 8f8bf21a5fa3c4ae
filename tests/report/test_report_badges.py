"""Every severity a finding or verdict can have is drawn: an 'info' badge used to be white on
white (the relu verdict of the demo's report showed an empty space where its badge belonged)."""

from __future__ import annotations

from importlib.resources import files

import pytest

from gradprobe.diagnosis.finding import SEVERITIES

TEMPLATE = (files("gradprobe.report") / "templates" / "report.html.j2").read_text()


@pytest.mark.parametrize("severity", [*SEVERITIES, "ok"])
def test_every_severity_has_a_coloured_badge(severity: str) -> None:
    assert f".badge.{severity} {{ background: var(--{severity}); }}" in TEMPLATE
    assert f"--{severity}: #" in TEMPLATE


@pytest.mark.parametrize("severity", SEVERITIES)
def test_every_finding_severity_has_a_coloured_border(severity: str) -> None:
    assert f".finding.{severity} {{ border-color: var(--{severity}); }}" in TEMPLATE
