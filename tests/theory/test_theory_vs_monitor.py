"""Theory against gradprobe's own measurement: on 10-layer width-64 MLPs at initialisation (linear
readout, mean squared error), the predicted per-example first/readout weight-gradient ratio
matches the ensemble RMS of the monitor's ``pe_grad_rms`` over nets (what mean-field theory
predicts: E||grad W||^2 over random nets; theory.md 9.2 measures the same), for sigmoid, tanh and
ReLU under Glorot, He and PyTorch-default initialisation. (A geometric mean over nets of each
net's ratio sits below it by the seed-to-seed spread, e.g. 7.5% for sigmoid/Glorot.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import gradprobe
from gradprobe.theory import predict_mlp

ACTS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}
NETS = 200


def _init(lin: nn.Linear, init: str, g: torch.Generator) -> None:
    if init == "glorot_uniform":
        nn.init.xavier_uniform_(lin.weight, generator=g)
        nn.init.zeros_(lin.bias)
    elif init == "he_uniform":
        nn.init.kaiming_uniform_(lin.weight, nonlinearity="relu", generator=g)
        nn.init.zeros_(lin.bias)
    else:  # torch_default: U(+-1/sqrt(fan_in)) for weight and bias
        bound = 1 / math.sqrt(lin.in_features)
        nn.init.uniform_(lin.weight, -bound, bound, generator=g)
        nn.init.uniform_(lin.bias, -bound, bound, generator=g)


def first_and_readout(act: str, init: str, seed: int) -> tuple[float, float]:
    """The monitor's per-example weight-gradient RMS of the first layer and of the readout."""
    g = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(10):
        lin = nn.Linear(64, 64 if i < 9 else 1)
        _init(lin, init, g)
        layers += [lin, ACTS[act]()] if i < 9 else [lin]
    model = nn.Sequential(*layers)
    x, y = torch.randn(64, 64, generator=g), torch.randn(64, 1, generator=g)
    with gradprobe.watch(model, per_example=True, activations=False, backward=False) as mon:
        nn.functional.mse_loss(model(x), y).backward()
        mon.step()
    p = mon.to_pandas()
    w = p[p["param"] == "weight"].sort_values("depth")["pe_grad_rms"].to_numpy()
    return float(w[0]), float(w[-1])


@pytest.mark.slow  # 200 nets per case, about 3 s each
@pytest.mark.parametrize("init", ["glorot_uniform", "he_uniform", "torch_default"])
@pytest.mark.parametrize("act", list(ACTS))
def test_prediction_matches_the_monitors_ensemble_rms(act, init):
    torch.set_num_threads(1)
    pairs = np.array([first_and_readout(act, init, s) for s in range(NETS)])
    pooled = math.sqrt(np.mean(pairs[:, 0] ** 2) / np.mean(pairs[:, 1] ** 2))
    predicted = predict_mlp([64] * 10 + [1], act, init).grad_norm_by_depth[0]
    assert predicted == pytest.approx(pooled, rel=0.05), (predicted, pooled)
