"""The verdict: the phase of a net (chi_1) and what it means at this depth (theory.md 3.1-3.2).

The phase is a property of the activation and the weight and bias variances, not of the depth::

    ordered   chi_1 < 1   the backward signal shrinks by sqrt(chi_1) per layer (vanishing side)
    critical  chi_1 = 1   (within CHI1_TOL: |ln chi_1| < 1e-3, a depth scale over 1000 layers)
    chaotic   chi_1 > 1   the backward signal grows by sqrt(chi_1) per layer (exploding side)

The verdict reads the phase against this net's depth L (weight layers), its depth scale
xi = 1/|ln chi_1| and the predicted first/readout ratios r of the weight gradients and of the
backward signal ||delta||; each verdict names its own phase:

* ``vanishing`` (ordered)  if min(r) < 1e-2, or chi_1 < 1 and L > 6 xi (Schoenholz's trainable
  depth; for the backward signal, L > 6 xi is a first/readout ratio below about e^-3 = 0.05);
* ``exploding`` (chaotic)  if max(r) > 1e2,  or chi_1 > 1 and L > 6 xi;
* ``critical`` (critical)  chi_1 = 1 and the ratios in [1e-2, 1e2]: gradients keep their scale;
* ``stable`` (ordered or chaotic) the ratios in range and L <= 6 xi: the net is shallow enough
  for its phase.

Severity, as the diagnosis rules grade the same measurements: ``error`` when the weight
gradients themselves vanish or explode (ratio outside [1e-2, 1e2]); ``warning`` when only the
backward signal does -- ReLU with Glorot init (chi_1 = 0.5) halves ||delta||^2 per layer while
the weight gradients stay level, only because the activations shrink at the same rate
(theory.md 0.3) -- or when the depth alone passes 6 xi; ``ok`` otherwise. The verdict speaks
of the net as initialised; ``diagnose`` of a training run grades the same phenomenon as
information when training undid it (:mod:`gradprobe.diagnosis.rules.gradient_flow`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gradprobe.theory._json import jsonable

VANISHING, EXPLODING, CRITICAL, STABLE = "vanishing", "exploding", "critical", "stable"
ORDERED, CHAOTIC = "ordered", "chaotic"
RATIO_LOW, RATIO_HIGH = 1e-2, 1e2
CHI1_TOL = 1e-3  # |ln chi_1| below this is the critical point (depth scale > 1000 layers)
RELU_FAMILY = {"relu", "leaky_relu", "gelu", "silu", "elu"}


def phase(chi1: float) -> str:
    """``ordered`` (chi_1 < 1), ``critical`` (chi_1 = 1 within CHI1_TOL) or ``chaotic``.

    Example:
        >>> phase(0.5), phase(0.9999999999999332), phase(1.21)
        ('ordered', 'critical', 'chaotic')
    """
    if chi1 > 0 and abs(math.log(chi1)) < CHI1_TOL:
        return CRITICAL
    return ORDERED if chi1 < 1 else CHAOTIC


@dataclass(frozen=True)
class Verdict:
    """What the theory says about a net at initialisation (see the module doc)."""

    kind: str
    chi1: float
    depth_scale: float
    trainable_depth: float
    depth: int
    message: str
    phase: str = CRITICAL
    severity: str = "ok"
    backward_only: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (non-finite numbers become None)."""
        return dict(jsonable(self))


def _kind(chi1: float, depth: int, trainable: float, ratios: tuple[float, float]) -> str:
    ph = phase(chi1)
    if min(ratios) < RATIO_LOW or (ph == ORDERED and depth > trainable):
        return VANISHING
    if max(ratios) > RATIO_HIGH or (ph == CHAOTIC and depth > trainable):
        return EXPLODING
    return CRITICAL if ph == CRITICAL else STABLE


def _phase_text(chi1: float) -> str:
    ph = phase(chi1)
    sign = {ORDERED: "chi1 < 1", CRITICAL: "chi1 = 1, the edge of chaos", CHAOTIC: "chi1 > 1"}
    return f"chi1 = {chi1:.3g}, {ph} phase ({sign[ph]})"


def _per_layer(chi1: float) -> str:
    if phase(chi1) == CRITICAL:
        return "the backward signal keeps its scale from layer to layer"
    verb = "shrinks" if chi1 < 1 else "grows"
    return f"the backward signal {verb} by x{math.sqrt(chi1):.3g} per layer towards the input"


def _depth_text(depth_scale: float, trainable: float, depth: int) -> str:
    if math.isinf(depth_scale):
        return f"no depth limit (this net has {depth} layers)"
    side = "past" if depth > trainable else "within"
    return (
        f"this net's {depth} layers are {side} its trainable depth 6 xi = {trainable:.3g} "
        f"(xi = {depth_scale:.3g} layers)"
    )


def verdict(
    chi1: float,
    depth_scale: float,
    depth: int,
    grad_ratio: float,
    delta_ratio: float,
    activation: str | None = None,
) -> Verdict:
    """Classify a net from chi_1, its depth scale and the predicted first/readout ratios.

    ``activation`` (the hidden layers' name, optional) lets the message name the fix.

    Example:
        >>> verdict(0.0557, 0.346, 10, 5.19e-6, 2.67e-6).kind
        'vanishing'
        >>> v = verdict(0.5, 1.4427, 11, 0.98, 0.0312, "relu")
        >>> v.kind, v.phase, v.severity, v.backward_only
        ('vanishing', 'ordered', 'warning', True)
        >>> v = verdict(0.9999999999999332, math.inf, 21, 1.65, 0.266)
        >>> v.kind, v.message.split(";")[0]
        ('critical', 'critical: chi1 = 1, critical phase (chi1 = 1, the edge of chaos)')
    """
    trainable = 6.0 * depth_scale
    kind = _kind(chi1, depth, trainable, (grad_ratio, delta_ratio))
    weights_out = not (RATIO_LOW <= grad_ratio <= RATIO_HIGH)
    backward_only = kind in (VANISHING, EXPLODING) and not weights_out
    severity = "error" if weights_out else "warning" if backward_only else "ok"
    head = {
        VANISHING: "vanishing gradients",
        EXPLODING: "exploding gradients",
        CRITICAL: "critical",
        STABLE: "stable at this depth",
    }[kind]
    if backward_only:
        head = f"{kind} backward signal, weight gradients level ({severity} at initialisation)"
    parts = [f"{head}: {_phase_text(chi1)}", _per_layer(chi1)]
    parts.append(_depth_text(depth_scale, trainable, depth))
    parts.append(
        f"predicted first/readout ratio {grad_ratio:.3g} for the weight gradients, "
        f"{delta_ratio:.3g} for the backward signal ||dL/dh||"
    )
    if backward_only:
        moves = "shrink" if kind == VANISHING else "grow"
        parts.append(
            f"the weight gradients stay level only because the activations {moves} at the "
            "same rate: the early layers still learn, with little margin"
        )
        if kind == VANISHING and (activation or "").lower() in RELU_FAMILY:
            parts.append(
                "fix: He initialisation (Var W = 2/fan_in) gives chi1 = 1; it keeps the "
                "forward signal's scale too, so lower the learning rate about 10x with it"
            )
    return Verdict(
        kind,
        chi1,
        depth_scale,
        trainable,
        depth,
        "; ".join(parts),
        phase(chi1),
        severity,
        backward_only,
    )
