"""Per-step cost of a watched ``torch.compile``'d model (medians of interleaved repeats).

Run: python benchmarks/bench_compile.py [--quick] [--backend inductor]

Identical copies of a tiny MLP (4 hidden layers of 64 ReLU units, batch 64, SGD) train side by
side in one process: compiled bare (twice: the ratio of the two copies is the noise floor),
compiled and watched at the default budget (5%), with ``every=1`` and with ``every=10``, and
eager (bare, default budget, every=1, and the default's fixed cost: hooks on steps that record
nothing, and those with the budget's bookkeeping); wall time and the thread's CPU time. Every
setup is built and watched first (``watch`` resets dynamo once), then warmed up until each kind
of step is compiled: compile time is excluded. Blocks of steps alternate in a shuffled order and
the median time per step of each setup is compared to the first compiled bare copy.
"""

from __future__ import annotations

import argparse
import copy
import platform
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch._dynamo as dynamo
from torch import nn

import gradprobe
from gradprobe.budget import Every


def mlp(depth: int = 4, width: int = 64, d_in: int = 32) -> nn.Sequential:
    layers: list[nn.Module] = []
    n = d_in
    for _ in range(depth):
        layers += [nn.Linear(n, width), nn.ReLU()]
        n = width
    layers.append(nn.Linear(n, 1))
    return nn.Sequential(*layers)


def setups(backend: str) -> tuple[dict[str, Callable[[], None]], list[object]]:
    """The steps of each setup, and the monitors (kept alive by the caller)."""
    torch.manual_seed(0)
    base = mlp()
    x, y = torch.randn(64, 32), torch.randn(64, 1)
    out: dict[str, Callable[[], None]] = {}
    keep: list[object] = []

    def add(
        name: str, compiled: bool, every: int | None, watched: bool = True, budget: Any = 0.05
    ) -> None:
        model = copy.deepcopy(base)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        run = torch.compile(model, backend=backend) if compiled else model
        if watched:
            keep.append(gradprobe.watch(run, opt, every=every, budget=budget))

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            nn.functional.mse_loss(run(x), y).backward()
            opt.step()

        out[name] = step

    add("compiled bare", True, None, watched=False)
    add("compiled bare (noise floor)", True, None, watched=False)
    add("compiled watched (default budget)", True, None)
    add("compiled watched every=1", True, 1)
    add("compiled watched every=10", True, 10)
    add("compiled watched, step 0 only", True, None, budget=Every(10**9))
    add("eager bare", False, None, watched=False)
    add("eager watched (default budget)", False, None)
    add("eager watched every=1", False, 1)
    # what the default pays before it records anything: the monitor's hooks on steps that
    # record nothing (a schedule recording step 0 only; compiled: also the hooks compiled in
    # and switched off), and those plus the budget's bookkeeping (a budget so small that it
    # records almost nothing)
    add("eager watched, step 0 only", False, None, budget=Every(10**9))
    add("eager watched (budget 1e-6)", False, None, budget=1e-6)
    return out, keep


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--backend", default="inductor")
    args = ap.parse_args()
    torch.set_num_threads(1)
    dynamo.utils.counters.clear()
    steps, _monitors = setups(args.backend)
    for name, step in steps.items():  # warm-up: every kind of step compiled; budgets settled
        for _ in range(1100 if "budget" in name else 12):  # budgets: past a quiet stretch
            step()
    breaks = dict(dynamo.utils.counters["graph_break"])
    block, rounds = (20, 15) if args.quick else (50, 40)
    times: dict[str, list[float]] = {k: [] for k in steps}
    cpu: dict[str, list[float]] = {k: [] for k in steps}  # thread CPU time: a shared machine
    names = list(steps)
    for _ in range(rounds):
        random.shuffle(names)
        for k in names:
            t0, c0 = time.perf_counter(), time.thread_time()
            for _ in range(block):
                steps[k]()
            times[k].append((time.perf_counter() - t0) / block)
            cpu[k].append((time.thread_time() - c0) / block)
    med = {k: statistics.median(v) for k, v in times.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    ref = med["compiled bare"]
    cpu = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {cpu}, 1 thread, backend={args.backend}")
    print(f"{rounds} rounds of {block} steps; graph breaks: {breaks or 0}")
    print(f"graph breaks after the warm-up: {dict(dynamo.utils.counters['graph_break']) or 0}")
    cref = cpu_med["compiled bare"]
    print(f"{'setup':34s} {'ms/step':>8s} {'x compiled bare':>16s} {'CPU ms':>7s} {'x':>6s}")
    for k in times:
        print(
            f"{k:34s} {med[k] * 1e3:8.3f} {med[k] / ref:16.2f} {cpu_med[k] * 1e3:7.3f} "
            f"{cpu_med[k] / cref:6.2f}"
        )
    for k, mon in zip([k for k in steps if "watched" in k], _monitors, strict=True):
        if "default budget" in k:
            print(f"{k}: " + ", ".join(f"{n} {v:.3f}" for n, v in mon.cost.items()))


if __name__ == "__main__":
    main()
