"""A finding: one frozen record of what is wrong, where, the numbers that show it, and what to do.

Layers are numbered one way wherever a person reads them: ``depths`` counts from 1 at the input
("layer 1" is nearest the input); ``layers`` are the module names, shown as names beside them.

Example:
    >>> f = Finding("vanishing", "error", "deep", ("0", "2"), (0,), {"ratio": 1e-5},
    ...             "gradients vanish", "why", (Remedy("relu_he", "keeps the gain at 1"),),
    ...             depths=(1, 2))
    >>> f.to_dict()["remedies"][0]["name"], f.to_dict()["depths"]
    ('relu_he', [1, 2])
    >>> f.where
    "layers 1-2 (modules '0', '2')"
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
    ``layers`` and ``steps``: where it was seen (module names, input to output); ``depths``: the
    same layers numbered from 1 at the input; ``evidence``: the numbers that triggered it;
    ``summary``: one line; ``explanation``: plain language; ``remedies``: ranked for this case,
    best first.
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
    depths: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.severity not in _RANK:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")

    @property
    def rank(self) -> int:
        """0 for errors, 1 for warnings, 2 for info (sort key)."""
        return _RANK[self.severity]

    @property
    def where(self) -> str:
        """The layers for a sentence: "layer 3 (module 'fc.2')", "layers 1-4, 7 (modules ...)";
        "" when the finding is about steps, not layers."""
        return where(self.depths, self.layers)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (non-finite numbers become None)."""
        return {
            "code": self.code,
            "severity": self.severity,
            "variant": self.variant,
            "layers": list(self.layers),
            "depths": [int(d) for d in self.depths],
            "steps": [int(s) for s in self.steps],
            "evidence": {k: _json(v) for k, v in self.evidence.items()},
            "summary": self.summary,
            "explanation": self.explanation,
            "remedies": [r.to_dict() for r in self.remedies],
        }


def _ranges(depths: tuple[int, ...]) -> str:
    """1, 2, 3, 5 -> '1-3, 5'."""
    out: list[str] = []
    ds = sorted(set(depths))
    start = prev = ds[0]
    for d in [*ds[1:], None]:
        if d is not None and d == prev + 1:
            prev = d
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if d is not None:
            start = prev = d
    return ", ".join(out)


def where(depths: tuple[int, ...], layers: tuple[str, ...]) -> str:
    """Layers numbered from 1 at the input, their module names quoted beside them.

    Example:
        >>> where((3,), ("fc.2",)), where((), ())
        ("layer 3 (module 'fc.2')", '')
        >>> where((), ("0", "2"))
        "modules '0', '2'"
    """
    names = ", ".join(f"'{n}'" for n in layers)
    if not depths:
        return f"module{'s' if len(layers) > 1 else ''} {names}" if layers else ""
    head = f"layer {depths[0]}" if len(depths) == 1 else f"layers {_ranges(depths)}"
    if not layers:
        return head
    return f"{head} (module{'s' if len(layers) > 1 else ''} {names})"


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
