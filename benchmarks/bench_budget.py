"""The default overhead budget, measured: ``watch(model, opt)`` against a bare step.

Run: python benchmarks/bench_budget.py [--quick] [--only small|large] [--threads N]

Identical copies of each model train side by side in one process: bare, a second bare copy
(its ratio to the first is the noise floor), watched at the default budget (5%), watched with
``every=1`` (every statistic on every step: what the budget saves), watched for the gradients
only on every step, and the per-parameter norm dict a Lightning user logs instead
(``grad_norm``, one norm per parameter; when lightning is installed). The default copy
first trains long enough for the budget to measure its tiers and correct its plan by the first
quiet stretch (600 steps; the others warm up for 3); then blocks of steps
alternate between the copies in a shuffled order, and the median time per step of each is
compared with the bare copy's, in wall time and in the thread's CPU time (on a machine shared
with other processes, only the CPU time is stable; the budget times steps in CPU time on the
CPU, see ``gradprobe.torch.monitor``). The budget's own view
(``monitor.cost``: measured cost of each tier, shares of steps chosen) is printed beside it,
and what bounds its accuracy: the gradients' cost on every step against what the monitor's
timing of its own code sees of it, and how far the bare step's time scatters from step to
step and over the 9 steps a quiet stretch measures.

Models: the California-size MLP (10 hidden layers of 64 sigmoid units, 8 inputs, batch 512,
~1.8 ms a step) and a large one (50 ReLU layers of 512, batch 512) where every statistic on
every step should fit in 5%.
"""

from __future__ import annotations

import argparse
import copy
import platform
import random
import statistics
import time
from typing import Any

import torch
from _timing import mlp, optimizer, train_step
from torch import nn

import gradprobe


def interleave(
    runners: dict[str, Any], *, block: int, repeats: int, settle: dict[str, int]
) -> dict[str, dict[str, list[float]]]:
    """Per block, seconds per step of each runner in wall time and in this thread's CPU time
    (the machine may be shared: other processes stretch wall time, not CPU time)."""
    for label, run in runners.items():
        for _ in range(settle.get(label, 3)):
            run()
    out: dict[str, dict[str, list[float]]] = {"wall": {}, "cpu": {}}
    for k in runners:
        out["wall"][k], out["cpu"][k] = [], []
    rng = random.Random(0)
    for _ in range(repeats):
        order = list(runners)
        rng.shuffle(order)
        for label in order:
            w0, c0 = time.perf_counter(), time.thread_time()
            for _ in range(block):
                runners[label]()
            out["wall"][label].append((time.perf_counter() - w0) / block)
            out["cpu"][label].append((time.thread_time() - c0) / block)
    return out


def compare(
    name: str,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    block: int,
    repeats: int,
    settle: int,
    scatter_steps: int,
) -> list[str]:
    runners: dict[str, Any] = {}
    monitors: dict[str, Any] = {}
    for label, kw in (
        ("bare", None),
        ("bare again (noise floor)", None),
        ("default watch (budget 5%)", {}),
        ("every=1, every statistic", {"every": 1}),
        ("every=1, gradients only", {"every": 1, "activations": False, "backward": False}),
    ):
        m = copy.deepcopy(model)
        opt = optimizer(m, "sgd")
        if kw is not None:
            monitors[label] = gradprobe.watch(m, opt, **kw)
        runners[label] = train_step(m, opt, x, y)
    norm_dict = _norm_dict(copy.deepcopy(model), x, y)
    if norm_dict is not None:
        runners["per-parameter norm dict"] = norm_dict
    got = interleave(
        runners, block=block, repeats=repeats, settle={"default watch (budget 5%)": settle}
    )
    med = {c: {k: statistics.median(v) for k, v in got[c].items()} for c in got}
    base = med["wall"]["bare"]
    lines = [
        f"{name}: bare step {base * 1e3:.3f} ms wall, {med['cpu']['bare'] * 1e3:.3f} ms CPU "
        f"(medians of {repeats} blocks of {block} steps)",
        f"  {'setting':<28} {'wall ms':>8} {'x bare':>7} {'CPU ms':>8} {'x bare':>7}",
    ]
    for label in runners:
        if label == "bare":
            continue
        w, c = med["wall"][label], med["cpu"][label]
        lines.append(
            f"  {label:<28} {w * 1e3:8.3f} {w / base:7.3f} {c * 1e3:8.3f} "
            f"{c / med['cpu']['bare']:7.3f}"
        )
    mon = monitors["default watch (budget 5%)"]
    c = mon.cost
    lines.append(
        "  budget's view: cost of gradients {:.1%}, of everything {:.1%}; shares: gradients "
        "{:.1%} of steps, everything {:.1%}; expected cost {:.1%}".format(
            c.get("gradients", float("nan")),
            c.get("all", float("nan")),
            c["share_gradients"],
            c["share_all"],
            c["expected"],
        )
    )
    params, layers = mon.to_pandas(), mon.to_pandas("layers")
    lines.append(
        f"  recorded: {params['step'].nunique()} of {mon.steps_seen} steps with gradients, "
        f"{layers['step'].nunique()} with everything"
    )
    # what bounds the budget: costs no clock of the monitor's shows (the gradients' cost on
    # every step against the monitor's timing of its own code), measured online against
    # quiet stretches whose few steps scatter as the bare step does
    true = med["cpu"]["every=1, gradients only"] / med["cpu"]["bare"] - 1
    timed = c.get("gradients", float("nan"))
    lines.append(
        f"  the gradients on every step cost {true:.1%} (CPU), the monitor's own clock sees "
        f"{timed:.1%} of a step: true / timed {true / timed:.2f}"
    )
    lines.append("  " + _scatter(runners["bare"], scatter_steps))
    for m in monitors.values():
        m.detach()
    return lines


def _scatter(step: Any, n: int) -> str:
    """How far the bare step's CPU time scatters from one step to the next, and the mean of 9
    steps (what a quiet stretch measures, its first 3 of 12 left out), as shares of a step."""
    times = []
    for _ in range(n):
        c0 = time.thread_time()
        step()
        times.append(time.thread_time() - c0)
    mean = statistics.fmean(times)
    nines = [statistics.fmean(times[i : i + 9]) for i in range(0, n - 8, 9)]
    return (
        f"bare step scatter over {n} steps (CPU): {statistics.stdev(times) / mean:.1%} a step, "
        f"{statistics.stdev(nines) / mean:.1%} the mean of 9 steps"
    )


def _norm_dict(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Any:
    """Lightning's pattern: ``grad_norm(model, 2)`` (one norm per parameter, a dict of tensors)
    after backward, before the step; the dicts are kept as a logger would (the latest 64).
    None when lightning is not installed."""
    try:
        from lightning.pytorch.utilities import grad_norm
    except ImportError:
        return None
    opt = optimizer(model, "sgd")
    logged: list[dict[str, torch.Tensor]] = []

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x), y).backward()
        logged.append(grad_norm(model, norm_type=2))
        del logged[:-64]
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    ap.add_argument("--only", choices=["small", "large"], default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"machine: {platform.processor() or platform.machine()}, {args.threads} thread(s), "
        f"torch {torch.__version__}, SGD"
    )
    if args.only != "large":
        x, y = torch.randn(512, 8), torch.randn(512, 1)
        reps = 9 if args.quick else 41
        lines = compare(
            "California-size sigmoid 10x64, batch 512",
            mlp(10, 64, 8, nn.Sigmoid),
            x,
            y,
            block=50,
            repeats=reps,
            settle=1100,  # past the first quiet stretch (steps ~515-527)
            scatter_steps=450 if args.quick else 1800,
        )
        print("\n".join(lines), flush=True)
    if args.only != "small":
        x, y = torch.randn(512, 512), torch.randn(512, 1)
        reps = 3 if args.quick else 11
        lines = compare(
            "deep wide ReLU 50x512, batch 512",
            mlp(50, 512, 512, nn.ReLU),
            x,
            y,
            block=10,
            repeats=reps,
            settle=600,  # past the first quiet stretch (steps ~515-527) and a decision
            scatter_steps=27 if args.quick else 90,
        )
        print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
