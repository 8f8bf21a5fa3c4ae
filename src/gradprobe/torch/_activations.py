"""Which nonlinearity is which: the dispatch table for activation statistics.

An activation belongs to a *family* that decides which extra statistic it gets:

- ``saturating`` (sigmoid, tanh): the fraction of elements whose derivative is under 1% of its
  maximum (sigmoid: s(1-s) < 0.0025; tanh: 1 - t^2 < 0.01).
- ``rectifier`` (relu, relu6, leaky_relu, elu, selu, celu, gelu, silu, mish, softplus): the fraction
  of dead units, units with no positive output for any example of the batch.
- anything else: mean, std and RMS only (the *policy for unknown layers*: measured, never guessed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
    # rectifiers whose output is never negative (relu, relu6, softplus): a unit is alive exactly
    # when its sum over the batch is positive, so the sum gives both numbers in one pass
    nonneg: bool = False


_S = math.sqrt(0.25 - 0.0025)  # sigmoid: s(1-s) < 0.0025  <=>  |s - 0.5| > _S
_T = math.sqrt(0.99)  # tanh: 1 - t^2 < 0.01  <=>  |t| > _T
SIGMOID = Activation("sigmoid", "saturating", 0.5 - _S, 0.5 + _S)
TANH = Activation("tanh", "saturating", -_T, _T)


def _rect(name: str) -> Activation:
    return Activation(name, "rectifier", nonneg=name in ("relu", "relu6", "softplus"))


MODULES: dict[type[nn.Module], Activation] = {
    nn.Sigmoid: SIGMOID,
    nn.Tanh: TANH,
    nn.ReLU: _rect("relu"),
    nn.ReLU6: _rect("relu6"),
    nn.LeakyReLU: _rect("leaky_relu"),
    nn.ELU: _rect("elu"),
    nn.SELU: _rect("selu"),
    nn.CELU: _rect("celu"),
    nn.GELU: _rect("gelu"),
    nn.SiLU: _rect("silu"),
    nn.Mish: _rect("mish"),
    nn.Softplus: _rect("softplus"),
}

FUNCTIONS: dict[object, Activation] = {
    torch.sigmoid: SIGMOID,
    torch.Tensor.sigmoid: SIGMOID,
    F.sigmoid: SIGMOID,
    torch.tanh: TANH,
    torch.Tensor.tanh: TANH,
    F.tanh: TANH,
    torch.relu: _rect("relu"),
    torch.Tensor.relu: _rect("relu"),
    F.relu: _rect("relu"),
    F.relu6: _rect("relu6"),
    F.leaky_relu: _rect("leaky_relu"),
    F.elu: _rect("elu"),
    F.selu: _rect("selu"),
    torch.selu: _rect("selu"),
    F.celu: _rect("celu"),
    F.gelu: _rect("gelu"),
    F.silu: _rect("silu"),
    F.mish: _rect("mish"),
    F.softplus: _rect("softplus"),
}


def of_module(module: nn.Module) -> Activation | None:
    """The activation an activation module computes, or None."""
    return MODULES.get(type(module))
