"""Small named networks with a known gradient pathology (or none), recorded by the monitor.

Each case trains a few SGD steps on standard-normal inputs and returns the monitor, so
``diagnose(monitor)`` sees exactly what a user's live monitor would.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

import gradprobe

ACT = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def mlp(act: str, depth: int, width: int, std: Callable[[int, int], float], n_in: int = 32):
    """``depth`` hidden layers of ``width`` units, weights N(0, std(fan_in, fan_out)^2), bias 0."""
    sizes = [n_in] + [width] * depth
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [_linear(a, b, std(a, b)), ACT[act]()]
    layers.append(_linear(width, 1, std(width, 1)))
    return nn.Sequential(*layers)


def _linear(a: int, b: int, std: float) -> nn.Linear:
    lin = nn.Linear(a, b)
    with torch.no_grad():
        lin.weight.normal_(0.0, std)
        lin.bias.zero_()
    return lin


def he(a: int, b: int) -> float:
    return math.sqrt(2.0 / a)


def glorot(a: int, b: int) -> float:
    return math.sqrt(2.0 / (a + b))


class Residual(nn.Module):
    """x + alpha * W2 relu(W1 x) blocks between an input and an output projection."""

    def __init__(self, width: int, blocks: int, n_in: int = 32) -> None:
        super().__init__()
        self.inp = _linear(n_in, width, he(n_in, width))
        self.blocks = nn.ModuleList(
            nn.Sequential(
                _linear(width, width, he(width, width)),
                nn.ReLU(),
                _linear(width, width, math.sqrt(1.0 / width)),
            )
            for _ in range(blocks)
        )
        self.alpha = 1.0 / math.sqrt(blocks)
        self.out = _linear(width, 1, glorot(width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = h + self.alpha * block(h)
        return self.out(h)


def record(
    model: nn.Module,
    seed: int,
    *,
    lr: float = 0.01,
    steps: int = 4,
    batch: int = 128,
    n_in: int = 32,
    nan_at: int | None = None,
    per_example: bool = True,
):
    """Train ``steps`` SGD steps on a fixed random regression task; returns the monitor."""
    g = torch.Generator().manual_seed(1000 + seed)
    x = torch.randn(batch, n_in, generator=g)
    y = torch.randn(batch, 1, generator=g)
    if nan_at is not None:
        x[nan_at, 0] = float("nan")
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    with gradprobe.watch(model, opt, per_example=per_example) as mon:
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
    return mon


def seeded(seed: int) -> None:
    torch.manual_seed(seed)


def case(name: str, seed: int, **kw):
    """The monitor of a named case, built from ``seed``."""
    seeded(seed)
    if name == "deep_sigmoid":
        return record(mlp("sigmoid", 10, 64, glorot), seed, **kw)
    if name == "relu_he":
        return record(mlp("relu", 10, 64, he), seed, **kw)
    if name == "relu_glorot":  # chi1 = 0.5: past the trainable depth 6 xi = 8.7 at 12 layers
        return record(mlp("relu", 12, 64, glorot), seed, **kw)
    if name == "tanh_glorot":
        return record(mlp("tanh", 10, 64, glorot), seed, **kw)
    if name == "residual":
        return record(Residual(64, 8), seed, lr=1e-3, **kw)
    if name == "large_init":
        return record(mlp("relu", 10, 64, lambda a, b: 2.0 * he(a, b)), seed, lr=1e-9, **kw)
    if name == "nan":
        return record(mlp("relu", 6, 32, he), seed, nan_at=3, **kw)
    if name == "dead_bias":
        model = mlp("relu", 6, 64, he)
        with torch.no_grad():
            model[6].bias.fill_(-10.0)  # the fourth hidden layer
        return record(model, seed, **kw)
    if name == "saturated_sigmoid":
        return record(mlp("sigmoid", 4, 64, lambda a, b: 8.0 / math.sqrt(a)), seed, **kw)
    if name == "tiny_lr":
        return record(mlp("relu", 6, 64, he), seed, lr=1e-9, **kw)
    raise KeyError(name)
