"""diagnose(): every registered rule over every variant, findings sorted by severity."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gradprobe.diagnosis.finding import Finding
from gradprobe.diagnosis.rules import RULES, Rule
from gradprobe.diagnosis.thresholds import Thresholds
from gradprobe.diagnosis.view import split
from gradprobe.errors import UnknownChoiceError, UsageError


def diagnose(
    run_or_records: Any,
    *,
    thresholds: Thresholds | Mapping[str, Any] | None = None,
    rules: Iterable[str] | None = None,
) -> list[Finding]:
    """Findings for a Run, a Monitor (anything with ``to_pandas(table)``) or (params, layers).

    One pass of every rule (or of ``rules``, by code) per variant; ``thresholds`` is a
    :class:`Thresholds` or a mapping of the ones to change. Findings come variant by variant,
    errors first. An empty list means nothing looked wrong.

    Example:
        >>> import pandas as pd
        >>> from gradprobe.records import empty_frame
        >>> diagnose((empty_frame("params"), empty_frame("layers")))
        []
    """
    th = _thresholds(thresholds)
    chosen = _rules(rules)
    out: list[Finding] = []
    for rec in split(run_or_records):
        found = [f for rule in chosen.values() for f in rule(rec, th)]
        out.extend(sorted(found, key=lambda f: f.rank))
    return out


def _thresholds(value: Thresholds | Mapping[str, Any] | None) -> Thresholds:
    if value is None:
        return Thresholds()
    if isinstance(value, Thresholds):
        return value
    if isinstance(value, Mapping):
        return Thresholds().replace(**value)
    raise UsageError(f"thresholds must be a Thresholds or a dict, got {type(value).__name__}")


def _rules(codes: Iterable[str] | None) -> dict[str, Rule]:
    if codes is None:
        return dict(RULES)
    out = {}
    for code in codes:
        if code not in RULES:
            raise UnknownChoiceError("rule", code, RULES)
        out[code] = RULES[code]
    return out


def verdict(findings: Iterable[Finding], variant: str | None = None) -> str:
    """One line: the worst severity and the codes found, or that nothing looked wrong.

    ``will not train well`` (an error), ``trains, with problems`` (a warning), ``trains, with
    notes`` (information only, e.g. a vanishing backward signal at initialisation that training
    undid), ``healthy: no finding``.

    Example:
        >>> verdict([])
        'healthy: no finding'
    """
    fs = [f for f in findings if variant is None or f.variant == variant]
    if not fs:
        return "healthy: no finding"
    worst = min(fs, key=lambda f: f.rank).severity
    codes = ", ".join(dict.fromkeys(f.code for f in sorted(fs, key=lambda f: f.rank)))
    label = {"error": "will not train well", "warning": "trains, with problems"}.get(
        worst, "trains, with notes"
    )
    return f"{label}: {codes}"


def brief(findings: Iterable[Finding]) -> list[dict[str, Any]]:
    """The short form ``gradprobe run --json`` adds per variant: code, severity, layers (module
    names) and depths (the same layers numbered from 1 at the input)."""
    return [
        {
            "code": f.code,
            "severity": f.severity,
            "layers": list(f.layers),
            "depths": [int(d) for d in f.depths],
        }
        for f in findings
    ]
