"""The verdict: vanishing, exploding or critical, with the depth scale (theory.md section 8).

Rule (depth L weight layers, xi = 1/|ln chi_1|, predicted first/readout ratios r of the weight
gradients and of the backward signal ||delta||):

* vanishing  if min(r) < 1e-2, or chi_1 < 1 and L > 6 xi   (Schoenholz's trainability depth)
* exploding  if max(r) > 1e2,  or chi_1 > 1 and L > 6 xi
* critical   otherwise: gradients keep their scale over this depth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gradprobe.theory._json import jsonable

VANISHING, EXPLODING, CRITICAL = "vanishing", "exploding", "critical"
RATIO_LOW, RATIO_HIGH = 1e-2, 1e2


@dataclass(frozen=True)
class Verdict:
    """What the theory says about a net at initialisation."""

    kind: str
    chi1: float
    depth_scale: float
    trainable_depth: float
    depth: int
    message: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (non-finite numbers become None)."""
        return dict(jsonable(self))


def _kind(chi1: float, depth: int, trainable: float, ratios: tuple[float, float]) -> str:
    if min(ratios) < RATIO_LOW or (chi1 < 1 and depth > trainable):
        return VANISHING
    if max(ratios) > RATIO_HIGH or (chi1 > 1 and depth > trainable):
        return EXPLODING
    return CRITICAL


def verdict(
    chi1: float, depth_scale: float, depth: int, grad_ratio: float, delta_ratio: float
) -> Verdict:
    """Classify a net from chi_1, its depth scale and the predicted first/readout ratios.

    Example:
        >>> verdict(0.0557, 0.346, 10, 5.19e-6, 2.67e-6).kind
        'vanishing'
        >>> verdict(1.0, math.inf, 10, 1.0, 1.0).kind
        'critical'
    """
    trainable = 6.0 * depth_scale
    kind = _kind(chi1, depth, trainable, (grad_ratio, delta_ratio))
    phase = "ordered" if chi1 < 1 else "chaotic" if chi1 > 1 else "critical"
    scale = "unbounded" if math.isinf(depth_scale) else f"{depth_scale:.3g} layers"
    message = (
        f"{kind}: chi1 = {chi1:.3g} ({phase} phase), gradient norms change by "
        f"sqrt(chi1) = {math.sqrt(chi1):.3g} per layer; depth scale {scale}, trainable to about "
        f"6 xi = {trainable:.3g} layers, this net has {depth}; predicted first/readout ratio "
        f"{grad_ratio:.3g} for weight gradients, {delta_ratio:.3g} for the backward signal"
    )
    return Verdict(kind, chi1, depth_scale, trainable, depth, message)
