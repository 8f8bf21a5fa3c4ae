"""Per-step cost of a watched training step against a bare one (medians of interleaved repeats).

Run: python benchmarks/bench_monitor.py [--quick]

Identical copies of each model train side by side in one process: bare, watched in each
configuration, a stand-in that only captures, and a second bare copy whose ratio to the first
shows the noise floor of the figures. Blocks of steps alternate between them in a shuffled order,
and the median time per step of each is compared, so drifts of the machine's speed hit all alike.
"""

from __future__ import annotations

import argparse
import copy
import platform
import random
import statistics
import time

import torch
from torch import nn

import gradprobe.torch as gt


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


OPTIMIZER = "sgd"
REDUCER = "auto"  # watch(..., reducer=...): "auto" (fused on the CPU), "fused" or "torch"


def make_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor):  # type: ignore[no-untyped-def]
    if OPTIMIZER == "adam":  # the update norm then comes from a snapshot of the weights
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    else:  # plain SGD: the update norm is lr * ||g||, no snapshot
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()

    return step, opt


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
        for m in model.modules():
            if m is not model:
                m.register_forward_hook(self._forward)
        opt.register_step_pre_hook(self._pre)
        opt.register_step_post_hook(self._post)

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


def time_block(step, n: int) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t0) / n


def compare(name: str, model: nn.Module, x, y, block: int, repeats: int) -> list[str]:  # type: ignore[no-untyped-def]
    lines = []
    bare_step, _ = make_step(copy.deepcopy(model), x, y)
    configs = {
        "every=1, all statistics": dict(every=1),
        "every=1, gradients only": dict(every=1, activations=False, backward=False),
        "every=10, all statistics": dict(every=10),
    }
    watched = {}
    for label, kw in configs.items():
        m = copy.deepcopy(model)
        step, opt = make_step(m, x, y)
        watched[label] = (step, gt.watch(m, opt, reducer=REDUCER, **kw))
    m = copy.deepcopy(model)
    floor_step, floor_opt = make_step(m, x, y)
    CaptureFloor(m, floor_opt)
    floor = "capture floor (hooks, no statistics)"
    again = "bare again (noise floor)"
    labels = [*configs, floor, again]
    times: dict[str, list[float]] = {"bare": [], **{k: [] for k in labels}}
    ratios: dict[str, list[float]] = {k: [] for k in labels}
    rng = random.Random(0)
    runners = {"bare": bare_step, **{k: step for k, (step, _) in watched.items()}}
    runners[floor] = floor_step
    runners[again], _ = make_step(copy.deepcopy(model), x, y)  # a second unwatched copy
    for _ in range(3):  # warm-up
        for run in runners.values():
            run()
    for _ in range(repeats):
        order = list(runners)
        rng.shuffle(order)  # no configuration always runs right after another
        got = {label: time_block(runners[label], block) for label in order}
        for label, t in got.items():
            times[label].append(t)
        for label in labels:
            ratios[label].append(got[label] / got["bare"])
    base = statistics.median(times["bare"])
    lines.append(
        f"{name}: bare step {base * 1e3:.3f} ms (median of {repeats} blocks of {block} steps)"
    )
    for label in labels:
        med = statistics.median(times[label])
        lines.append(
            f"  {label:<37} {med * 1e3:.3f} ms  {med / base:.3f}x"
            f"  (median of per-block ratios {statistics.median(ratios[label]):.3f}x)"
        )
    for _, mon in watched.values():
        mon.detach()
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    ap.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    ap.add_argument("--only", choices=["small", "large"], default=None)
    ap.add_argument("--reducer", choices=["auto", "fused", "torch"], default="auto")
    args = ap.parse_args()
    global OPTIMIZER, REDUCER
    OPTIMIZER, REDUCER = args.optimizer, args.reducer
    torch.manual_seed(0)
    reps = 5 if args.quick else 41
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads,"
        f" torch {torch.__version__}"
    )
    print(f"optimizer: {OPTIMIZER}, reducer: {REDUCER}")
    if args.only != "large":
        x, y = torch.randn(512, 8), torch.randn(512, 1)
        model = mlp(10, 64, 8, nn.Sigmoid)
        for line in compare("California sigmoid 10x64, batch 512", model, x, y, 10, reps):
            print(line)
    if args.only != "small":
        x, y = torch.randn(512, 512), torch.randn(512, 1)
        model = mlp(50, 512, 512, nn.ReLU)
        for line in compare(
            "deep wide ReLU MLP 50x512, batch 512", model, x, y, 10, max(3, reps // 4)
        ):
            print(line)


if __name__ == "__main__":
    main()
