"""Initialisation schemes as weight and bias variances.

Each scheme gives Var(W_ij) and Var(b_i) for a layer with ``fan_in`` inputs and ``fan_out`` outputs;
the forward ``sigma_w^2`` of mean-field theory is ``fan_in * Var(W)``. Uniform and normal variants
of one scheme have the same variance, hence the same prediction.

================  ====================================  ====================
scheme            Var(W)                                Var(b)
================  ====================================  ====================
glorot_uniform    gain^2 * 2 / (fan_in + fan_out)       0
glorot_normal     gain^2 * 2 / (fan_in + fan_out)       0
he_uniform        gain^2 * 2 / fan_in                   0
he_normal         gain^2 * 2 / fan_in                   0
lecun_normal      gain^2 / fan_in                       0
orthogonal        gain^2 / max(fan_in, fan_out)         0
torch_default     gain^2 / (3 fan_in)  (U(+-1/sqrt n))  1 / (3 fan_in)
================  ====================================  ====================
"""

from __future__ import annotations

from dataclasses import dataclass

from gradprobe.errors import UnknownChoiceError, UsageError

INITS = (
    "glorot_uniform",
    "glorot_normal",
    "he_uniform",
    "he_normal",
    "lecun_normal",
    "orthogonal",
    "torch_default",
)
_ALIASES = {"xavier_uniform": "glorot_uniform", "xavier_normal": "glorot_normal"}
_ALIASES |= {
    "kaiming_uniform": "he_uniform",
    "kaiming_normal": "he_normal",
    "default": "torch_default",
}


@dataclass(frozen=True)
class InitVariances:
    """Var(W_ij) and Var(b_i) of one layer."""

    weight_var: float
    bias_var: float


def canonical_init(name: str) -> str:
    """The canonical scheme name (``xavier_*`` and ``kaiming_*`` are accepted aliases).

    Example:
        >>> canonical_init("xavier_uniform")
        'glorot_uniform'
    """
    key = _ALIASES.get(str(name).lower(), str(name).lower())
    if key not in INITS:
        raise UnknownChoiceError("init", name, INITS)
    return key


def init_variances(init: str, fan_in: int, fan_out: int, gain: float = 1.0) -> InitVariances:
    """Var(W) and Var(b) that scheme ``init`` gives a ``fan_in -> fan_out`` layer (table above).

    Example:
        >>> init_variances("glorot_uniform", 64, 64)
        InitVariances(weight_var=0.015625, bias_var=0.0)
        >>> init_variances("torch_default", 64, 10).bias_var == 1 / 192
        True
    """
    if fan_in < 1 or fan_out < 1:
        raise UsageError(f"layer sizes must be positive, got fan_in={fan_in}, fan_out={fan_out}")
    scheme, g2 = canonical_init(init), gain * gain
    if scheme.startswith("glorot"):
        return InitVariances(g2 * 2 / (fan_in + fan_out), 0.0)
    if scheme.startswith("he"):
        return InitVariances(g2 * 2 / fan_in, 0.0)
    if scheme == "lecun_normal":
        return InitVariances(g2 / fan_in, 0.0)
    if scheme == "orthogonal":
        return InitVariances(g2 / max(fan_in, fan_out), 0.0)
    return InitVariances(g2 / (3 * fan_in), 1 / (3 * fan_in))
