"""Which nonlinearity is which: the dispatch table for activation statistics.

An activation belongs to a *family* that decides which extra statistic it gets:

- ``saturating``: the fraction of elements whose derivative is under 1% of its maximum, read
  from the output as a band: saturated outside ``[low, high]``. sigmoid: s(1-s) < 0.0025;
  tanh: 1 - t^2 < 0.01; softsign: (1-|y|)^2 < 0.01, |y| > 0.9; hardtanh and hardsigmoid: the
  output is clamped (derivative 0) at the ends of their range; Hugging Face's Laplace (a Gaussian
  CDF): exp(-z^2) < 0.01.
- ``rectifier`` (relu, relu6, leaky_relu, rrelu, prelu, elu, selu, celu, every GELU variant,
  silu, mish, hardswish, softplus, relu^2): the fraction of dead units, units with no positive
  output for any example of the batch.
- ``other`` (Hugging Face's xIELU, sqrt-softplus): mean, std and RMS only -- known so that the
  functional calls inside them never name the layer.
- anything unknown is no activation: mean, std and RMS of the layer output (the *policy for
  unknown layers*: measured, never guessed).

Names say what computes the output: ``nn.GELU(approximate="tanh")`` and HF's ``GELUTanh`` are
``gelu_tanh``, HF's ``NewGELUActivation`` is ``gelu_new`` (a tanh inside a GELU is not a tanh).
Modules are matched by class (a subclass that keeps the forward inherits the activation) and the
Hugging Face ones by class name, so that transformers never has to be imported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Activation:
    """A nonlinearity gradprobe knows: its name and how to tell saturation from its output."""

    name: str
    family: str  # "saturating", "rectifier" or "other"
    # saturating only: the output is saturated outside [low, high]
    low: float = -math.inf
    high: float = math.inf
    # rectifiers whose output is never negative (relu, relu6, softplus, relu^2): a unit is alive
    # exactly when its sum over the batch is positive, so the sum gives both numbers in one pass
    nonneg: bool = False


_S = math.sqrt(0.25 - 0.0025)  # sigmoid: s(1-s) < 0.0025  <=>  |s - 0.5| > _S
_T = math.sqrt(0.99)  # tanh: 1 - t^2 < 0.01  <=>  |t| > _T
SIGMOID = Activation("sigmoid", "saturating", 0.5 - _S, 0.5 + _S)
TANH = Activation("tanh", "saturating", -_T, _T)
SOFTSIGN = Activation("softsign", "saturating", -0.9, 0.9)  # y' = (1 - |y|)^2
# HF LaplaceActivation: 0.5 (1 + erf(z)), derivative ~ exp(-z^2) < 1% of its maximum at |z| > _Z
_Z = math.sqrt(math.log(100.0))
LAPLACE = Activation("laplace", "saturating", 0.5 * (1 - math.erf(_Z)), 0.5 * (1 + math.erf(_Z)))
_CLAMP_TOL = 2.0**-20  # a clamped output sits exactly at its bound; 2^-20 of the range is exact


def clamped(name: str, lo: float, hi: float) -> Activation:
    """A piecewise-linear activation clamped to [lo, hi] (hardtanh, hardsigmoid): its derivative
    is 0 exactly where the output sits at a bound, so those outputs count as saturated."""
    tol = (hi - lo) * _CLAMP_TOL
    return Activation(name, "saturating", lo + tol, hi - tol)


HARDTANH = clamped("hardtanh", -1.0, 1.0)
HARDSIGMOID = clamped("hardsigmoid", 0.0, 1.0)


def _rect(name: str, nonneg: bool = False) -> Activation:
    return Activation(name, "rectifier", nonneg=nonneg)


RELU = _rect("relu", nonneg=True)
RELU6 = _rect("relu6", nonneg=True)
SOFTPLUS = _rect("softplus", nonneg=True)
LEAKY_RELU = _rect("leaky_relu")
RRELU = _rect("rrelu")
ELU = _rect("elu")
SELU = _rect("selu")
CELU = _rect("celu")
GELU = _rect("gelu")
GELU_TANH = _rect("gelu_tanh")
SILU = _rect("silu")
MISH = _rect("mish")
HARDSWISH = _rect("hardswish")

MODULES: dict[type[nn.Module], Activation] = {
    nn.Sigmoid: SIGMOID,
    nn.Tanh: TANH,
    nn.Softsign: SOFTSIGN,
    nn.Hardtanh: HARDTANH,  # instances with other bounds: see of_module
    nn.Hardsigmoid: HARDSIGMOID,
    nn.ReLU: RELU,
    nn.ReLU6: RELU6,  # a subclass of nn.Hardtanh, but a rectifier
    nn.LeakyReLU: LEAKY_RELU,
    nn.RReLU: RRELU,
    nn.PReLU: _rect("prelu"),
    nn.ELU: ELU,
    nn.SELU: SELU,
    nn.CELU: CELU,
    nn.GELU: GELU,  # approximate="tanh": gelu_tanh, see of_module
    nn.SiLU: SILU,
    nn.Mish: MISH,
    nn.Hardswish: HARDSWISH,
    nn.Softplus: SOFTPLUS,
}

# Hugging Face transformers.activations (and the copies of it in remote-code models), by class
# name: what each really computes. LinearActivation is the identity: no activation.
HF_CLASSES: dict[str, Activation] = {
    "GELUActivation": GELU,  # exact erf GELU (also its pure-Python form)
    "NewGELUActivation": _rect("gelu_new"),  # the tanh approximation, written out (GPT-2)
    "GELUTanh": GELU_TANH,  # F.gelu(approximate="tanh")
    "PytorchGELUTanh": GELU_TANH,  # its older name
    "FastGELUActivation": _rect("gelu_fast"),  # tanh approximation, another factoring
    "AccurateGELUActivation": _rect("gelu_accurate"),
    "QuickGELUActivation": _rect("quick_gelu"),  # x sigmoid(1.702 x)
    "ClippedGELUActivation": _rect("gelu_clipped"),  # GELU clipped to [min, max]
    "SiLUActivation": SILU,
    "MishActivation": MISH,
    "ReLUSquaredActivation": _rect("relu2", nonneg=True),  # relu(x)^2
    "LaplaceActivation": LAPLACE,
    "SqrtSoftplusActivation": Activation("sqrt_softplus", "other"),  # > 0: never dead
    "XIELUActivation": Activation("xielu", "other"),  # slope beta - alpha_n < 0 for x -> -inf
}
_NONE = frozenset({"LinearActivation"})


def of_module(module: nn.Module) -> Activation | None:
    """The activation an activation module computes, or None for any other module.

    Matched on the class and its bases (a subclass that overrides ``forward`` computes something
    else and is not matched), torch.nn by type, Hugging Face by class name. Instances read their
    arguments: ``nn.GELU(approximate="tanh")`` is gelu_tanh, ``nn.Hardtanh(-2, 2)`` saturates at
    +-2.
    """
    cls = type(module)
    for base in cls.__mro__:
        if base is nn.Module or base is object:
            return None
        if base.__name__ in _NONE:
            return None
        act = MODULES.get(base) or HF_CLASSES.get(base.__name__)
        if act is None:
            continue
        if base is not cls and getattr(cls, "forward", None) is not getattr(base, "forward", None):
            return None  # the subclass computes something of its own
        if base is nn.GELU and getattr(module, "approximate", "none") == "tanh":
            return GELU_TANH
        if base is nn.Hardtanh:
            return _hardtanh(getattr(module, "min_val", -1.0), getattr(module, "max_val", 1.0))
        return act
    return None


def _hardtanh(lo: float, hi: float) -> Activation:
    return HARDTANH if (lo, hi) == (-1.0, 1.0) else clamped("hardtanh", float(lo), float(hi))


FUNCTIONS: dict[object, Activation] = {
    torch.sigmoid: SIGMOID,
    torch.sigmoid_: SIGMOID,
    torch.Tensor.sigmoid: SIGMOID,
    torch.Tensor.sigmoid_: SIGMOID,
    torch.special.expit: SIGMOID,
    F.sigmoid: SIGMOID,
    torch.tanh: TANH,
    torch.tanh_: TANH,
    torch.Tensor.tanh: TANH,
    torch.Tensor.tanh_: TANH,
    F.tanh: TANH,
    F.softsign: SOFTSIGN,
    F.hardtanh: HARDTANH,  # default bounds; of_call reads others
    F.hardtanh_: HARDTANH,
    F.hardsigmoid: HARDSIGMOID,
    torch.relu: RELU,
    torch.relu_: RELU,
    torch.Tensor.relu: RELU,
    torch.Tensor.relu_: RELU,
    F.relu: RELU,
    F.relu_: RELU,
    F.relu6: RELU6,
    F.leaky_relu: LEAKY_RELU,
    F.leaky_relu_: LEAKY_RELU,
    F.rrelu: RRELU,
    F.rrelu_: RRELU,
    F.elu: ELU,
    F.elu_: ELU,
    F.selu: SELU,
    torch.selu: SELU,
    torch.selu_: SELU,
    F.celu: CELU,
    F.celu_: CELU,
    F.gelu: GELU,  # approximate="tanh": of_call says gelu_tanh
    F.silu: SILU,
    F.mish: MISH,
    F.hardswish: HARDSWISH,
    F.softplus: SOFTPLUS,
}


def _gelu_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Activation:
    approximate = kwargs.get("approximate", args[1] if len(args) > 1 else "none")
    return GELU_TANH if approximate == "tanh" else GELU


def _hardtanh_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Activation:
    lo = kwargs.get("min_val", args[1] if len(args) > 1 else -1.0)
    hi = kwargs.get("max_val", args[2] if len(args) > 2 else 1.0)
    return _hardtanh(lo, hi)


# functions whose arguments change what they compute
_BY_ARGS: dict[object, Callable[[tuple[Any, ...], dict[str, Any]], Activation]] = {
    F.gelu: _gelu_call,
    F.hardtanh: _hardtanh_call,
    F.hardtanh_: _hardtanh_call,
}


def of_call(
    func: object, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
) -> Activation | None:
    """The activation a functional call computes (``F.relu(x)``, ``x.sigmoid()``,
    ``F.gelu(x, approximate="tanh")``), or None: ``FUNCTIONS[func]`` refined by the arguments."""
    act = FUNCTIONS.get(func)
    if act is None:
        return None
    refine = _BY_ARGS.get(func)
    return refine(args, kwargs or {}) if refine is not None else act
