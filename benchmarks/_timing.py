"""What the per-step benchmarks share: the models, the bare training step, the capture floor and
the interleaved timing of several copies of one model in one process.

Identical copies train side by side; blocks of steps alternate between them in a shuffled order
(no copy always runs right after another), and each copy's block time is compared with the
reference copy's block of the same round, so drifts of the machine's speed hit all alike.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

Step = Callable[[], None]


def mlp(depth: int, width: int, d_in: int, act: type[nn.Module]) -> nn.Sequential:
    """Glorot-uniform for sigmoid (Keras's default), He-normal for ReLU, zero biases.

    A sane initialisation matters for timing: PyTorch's default init shrinks a 50-layer ReLU
    net's activations into denormal floats, which makes every step many times slower.
    """
    layers: list[nn.Module] = []
    n = d_in
    for _ in range(depth):
        layers += [nn.Linear(n, width), act()]
        n = width
    layers.append(nn.Linear(n, 1))
    for m in layers:
        if isinstance(m, nn.Linear):
            if act is nn.ReLU:
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            else:
                nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return nn.Sequential(*layers)


def optimizer(model: nn.Module, name: str = "sgd") -> torch.optim.Optimizer:
    """Plain SGD (the update norm is then lr * ||g||, no snapshot) or Adam."""
    if name == "adam":  # the update norm then comes from a snapshot of the weights
        return torch.optim.Adam(model.parameters(), lr=1e-4)
    return torch.optim.SGD(model.parameters(), lr=1e-3)


def train_step(
    model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> Step:
    """The bare loop every setting runs: zero_grad, forward, MSE loss, backward, step."""

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()

    return step


class CaptureFloor:
    """The least any hook-based monitor pays for every statistic: a forward hook on every
    module, a tensor hook on each output that receives dL/dh, and optimizer pre/post hooks that
    read each parameter's gradient. Nothing is computed and nothing is kept: this is the cost of
    the hooks alone, the floor under gradprobe's every=1 figure.

    (Keeping the tensors would cost more than the hooks: held until the step ends, 50 outputs and
    50 dL/dh of 1 MB each made the 50x512 model's step 6% slower, where the hooks alone cost
    nothing measurable; gradprobe reduces large tensors as they come and keeps none.)"""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer) -> None:
        self.seen = 0
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.handles = [
            m.register_forward_hook(self._forward) for m in model.modules() if m is not model
        ]
        self.handles.append(opt.register_step_pre_hook(self._pre))
        self.handles.append(opt.register_step_post_hook(self._post))

    def _forward(self, module, inputs, out):  # type: ignore[no-untyped-def]
        self.seen += 1
        if out.requires_grad:
            out.register_hook(self._backward)

    def _backward(self, grad):  # type: ignore[no-untyped-def]
        self.seen += 1

    def _pre(self, opt, args, kwargs):  # type: ignore[no-untyped-def]
        self.seen += sum(p.grad is not None for p in self.params)

    def _post(self, opt, args, kwargs):  # type: ignore[no-untyped-def]
        self.seen += 1

    def detach(self) -> None:
        for h in self.handles:
            h.remove()


def time_block(step: Step, n: int) -> float:
    """Seconds per step over ``n`` consecutive steps."""
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t0) / n


@dataclass
class Timings:
    """Per-block seconds per step of each copy, and each block's ratio to the reference's block
    of the same round."""

    reference: str
    times: dict[str, list[float]] = field(default_factory=dict)
    ratios: dict[str, list[float]] = field(default_factory=dict)

    def median(self, label: str) -> float:
        """Median seconds per step."""
        return statistics.median(self.times[label])

    def ratio(self, label: str) -> float:
        """Median of the per-block ratios to the reference (pairs blocks of one round)."""
        return statistics.median(self.ratios[label])

    def ratio_of_medians(self, label: str) -> float:
        return self.median(label) / self.median(self.reference)


def interleave(
    runners: dict[str, Step],
    *,
    reference: str,
    block: int,
    repeats: int,
    warmup: int = 3,
    warmup_of: dict[str, int] | None = None,
    seed: int = 0,
) -> Timings:
    """Time ``repeats`` rounds; in each, every runner runs one block of ``block`` steps, in a
    shuffled order. Before timing, each runner takes ``warmup`` steps (``warmup_of[label]`` for
    the ones named there: a schedule that adapts needs longer to settle)."""
    warmup_of = warmup_of or {}
    for label, run in runners.items():
        for _ in range(warmup_of.get(label, warmup)):
            run()
    out = Timings(reference, {k: [] for k in runners}, {k: [] for k in runners})
    rng = random.Random(seed)
    for _ in range(repeats):
        order = list(runners)
        rng.shuffle(order)
        got = {label: time_block(runners[label], block) for label in order}
        for label, t in got.items():
            out.times[label].append(t)
            out.ratios[label].append(t / got[reference])
    return out
