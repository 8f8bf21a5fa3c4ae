"""Diagnosis: the records of a run (or a live monitor) turned into findings -- pure pandas/numpy.

``diagnose(run)`` runs every rule of :data:`RULES` on each variant; a rule is a pure function from
one variant's tables to :class:`Finding` records (code, severity, layers, steps, evidence,
explanation, ranked remedies). Criteria are depth-relative and scale-free
(:mod:`gradprobe.diagnosis.flow`); thresholds live in :class:`Thresholds`.

Example:
    >>> import gradprobe
    >>> from gradprobe.diagnosis import diagnose
    >>> findings = diagnose(gradprobe.load_run("runs/demo"))   # doctest: +SKIP
    >>> [f.code for f in findings]                              # doctest: +SKIP
    ['vanishing', 'stalled_layers']
"""

from __future__ import annotations

from gradprobe.diagnosis.core import brief, diagnose, verdict
from gradprobe.diagnosis.finding import ERROR, INFO, SEVERITIES, WARNING, Finding, Remedy
from gradprobe.diagnosis.rules import RULES, Rule
from gradprobe.diagnosis.thresholds import Thresholds
from gradprobe.diagnosis.view import VariantRecords

__all__ = [
    "ERROR",
    "INFO",
    "RULES",
    "SEVERITIES",
    "WARNING",
    "Finding",
    "Remedy",
    "Rule",
    "Thresholds",
    "VariantRecords",
    "brief",
    "diagnose",
    "verdict",
]
