"""The experiments' optimizers: torch's numbers, without importing torch._dynamo."""

from __future__ import annotations

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from gradprobe.experiments import torch_backend as tb  # noqa: E402


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(5, 7), torch.nn.Sigmoid(), torch.nn.Linear(7, 1), torch.nn.Sigmoid()
    )


def _train(net: torch.nn.Module, opt: torch.optim.Optimizer, steps: int = 40) -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(32, 5, generator=gen), torch.rand(32, 1, generator=gen)
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()


def test_plain_sgd_takes_torch_sgd_steps_bit_for_bit() -> None:
    ours, ref = _net(0), _net(0)
    _train(ours, tb.make_optimizer("sgd", ours.parameters(), 0.05))
    _train(ref, torch.optim.SGD(ref.parameters(), lr=0.05))
    for p, q in zip(ours.parameters(), ref.parameters(), strict=True):
        assert torch.equal(p, q)


def test_eager_optimizer_zero_grad_keeps_torch_semantics() -> None:
    net = _net(0)
    opt = tb.make_optimizer("adam", net.parameters(), 0.1)
    net(torch.ones(2, 5)).sum().backward()
    opt.zero_grad(set_to_none=False)
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in net.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_watched_sgd_and_adam_training_never_imports_dynamo() -> None:
    """torch.optim.SGD imported torch._dynamo (1-2 s of the demo's start-up) on its first
    add_param_group and on every step; the experiments' optimizers do not."""
    code = """
import sys
import numpy as np
from gradprobe.experiments import torch_backend as tb
from gradprobe.experiments.data import Dataset
from gradprobe.experiments.spec import ModelSpec, TrainSpec, Variant
rng = np.random.default_rng(0)
x = rng.standard_normal((64, 3)).astype(np.float32)
y = rng.standard_normal((64, 1)).astype(np.float32)
data = Dataset("toy", "regression", x, y, x, y)
for opt in ("sgd", "adam"):
    v = Variant("v", ModelSpec(depth=3, width=8, activation="relu"))
    spec = TrainSpec(optimizer=opt, lr=0.01, epochs=2, loss="mse", batch_size=16)
    out = tb.train(v, data, spec, every=2)
    assert len(out.monitor.to_pandas()), opt
print("torch._dynamo" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def _keras_adam_one_by_one(
    params: list[torch.Tensor], state: dict[int, dict], lr: float, wd: float
) -> None:
    """The reference: Keras's Adam update, one parameter at a time."""
    b1, b2, eps = 0.9, 0.999, 1e-7
    with torch.no_grad():
        for p in params:
            s = state.setdefault(
                id(p), {"t": 0, "m": torch.zeros_like(p), "v": torch.zeros_like(p)}
            )
            s["t"] += 1
            s["m"].lerp_(p.grad, 1 - b1)
            s["v"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            alpha = lr * (1 - b2 ** s["t"]) ** 0.5 / (1 - b1 ** s["t"])
            if wd:
                p.mul_(1 - lr * wd)
            p.addcdiv_(s["m"], s["v"].sqrt().add_(eps), value=-alpha)


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_keras_adam_foreach_equals_one_parameter_at_a_time(name: str) -> None:
    ours, ref = _net(0), _net(0)
    opt = tb.make_optimizer(name, ours.parameters(), 0.1)
    wd = 0.004 if name == "adamw" else 0.0
    state: dict[int, dict] = {}
    gen = torch.Generator().manual_seed(1)
    for _ in range(30):
        x, y = torch.randn(32, 5, generator=gen), torch.rand(32, 1, generator=gen)
        for net in (ours, ref):
            for p in net.parameters():
                p.grad = None
            torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()
        _keras_adam_one_by_one(list(ref.parameters()), state, 0.1, wd)
    for p, q in zip(ours.parameters(), ref.parameters(), strict=True):
        assert torch.equal(p, q)
