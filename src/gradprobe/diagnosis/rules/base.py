"""The one protocol every rule follows: a pure function from one variant's records to findings."""

from __future__ import annotations

from typing import Protocol

from gradprobe.diagnosis.finding import Finding
from gradprobe.diagnosis.thresholds import Thresholds
from gradprobe.diagnosis.view import VariantRecords


class Rule(Protocol):
    """``rule(records, thresholds) -> findings``; no state, no side effects."""

    def __call__(self, records: VariantRecords, thresholds: Thresholds, /) -> list[Finding]: ...


def fmt(x: float) -> str:
    """A number for a sentence: 3 significant digits."""
    return f"{x:.3g}"
