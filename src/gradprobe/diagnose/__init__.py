"""Diagnosis: the records of a run (or a live monitor) turned into findings -- pure pandas/numpy.

``diagnose(run)`` runs every rule of :data:`RULES` on each variant; a rule is a pure function from
one variant's tables to :class:`Finding` records (code, severity, layers, steps, evidence,
explanation, ranked remedies). Criteria are depth-relative and scale-free
(:mod:`gradprobe.diagnose.flow`); thresholds live in :class:`Thresholds`.

Example:
    >>> import gradprobe
    >>> from gradprobe.diagnose import diagnose
    >>> findings = diagnose(gradprobe.load_run("runs/demo"))   # doctest: +SKIP
    >>> [f.code for f in findings]                              # doctest: +SKIP
    ['vanishing', 'stalled_layers']
"""

from __future__ import annotations

from gradprobe.diagnose.core import brief, diagnose, verdict
from gradprobe.diagnose.finding import ERROR, INFO, SEVERITIES, WARNING, Finding, Remedy
from gradprobe.diagnose.rules import RULES, Rule
from gradprobe.diagnose.thresholds import Thresholds
from gradprobe.diagnose.view import VariantRecords

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
