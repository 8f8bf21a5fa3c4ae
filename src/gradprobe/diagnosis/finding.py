"""A finding: one frozen record of what is wrong, where, the numbers that show it, and what to do.

Example:
    >>> f = Finding("vanishing", "error", "deep", ("0", "1"), (0,), {"ratio": 1e-5},
    ...             "gradients vanish", "why", (Remedy("relu_he", "keeps the gain at 1"),))
    >>> f.to_dict()["remedies"][0]["name"]
    'relu_he'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

ERROR, WARNING, INFO = "error", "warning", "info"
SEVERITIES = (ERROR, WARNING, INFO)
_RANK = {s: i for i, s in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class Remedy:
    """One thing to try: a short ``name`` and ``why`` it helps in this case."""

    name: str
    why: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "why": self.why}


@dataclass(frozen=True)
class Finding:
    """What a rule found in one variant of a run.

    ``code``: the rule (``vanishing``, ``exploding``, ...); ``severity``: ``error`` (training
    will not work as it is), ``warning`` (it works less well than it could) or ``info``;
    ``layers`` and ``steps``: where it was seen (layers input to output); ``evidence``: the numbers
    that triggered it; ``summary``: one line; ``explanation``: plain language; ``remedies``: ranked
    for this case, best first.
    """

    code: str
    severity: str
    variant: str
    layers: tuple[str, ...]
    steps: tuple[int, ...]
    evidence: dict[str, Any] = field(hash=False)
    summary: str
    explanation: str
    remedies: tuple[Remedy, ...] = ()

    def __post_init__(self) -> None:
        if self.severity not in _RANK:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")

    @property
    def rank(self) -> int:
        """0 for errors, 1 for warnings, 2 for info (sort key)."""
        return _RANK[self.severity]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (non-finite numbers become None)."""
        return {
            "code": self.code,
            "severity": self.severity,
            "variant": self.variant,
            "layers": list(self.layers),
            "steps": [int(s) for s in self.steps],
            "evidence": {k: _json(v) for k, v in self.evidence.items()},
            "summary": self.summary,
            "explanation": self.explanation,
            "remedies": [r.to_dict() for r in self.remedies],
        }


def _json(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_json(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _json(x) for k, x in v.items()}
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
