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

import torch
from _timing import CaptureFloor, interleave, mlp, optimizer, train_step
from torch import nn

import gradprobe.torch as gt

OPTIMIZER = "sgd"
REDUCER = "auto"  # watch(..., reducer=...): "auto" (fused on the CPU), "fused" or "torch"


def make_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor):  # type: ignore[no-untyped-def]
    opt = optimizer(model, OPTIMIZER)
    return train_step(model, opt, x, y), opt


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
    runners = {"bare": bare_step, **{k: step for k, (step, _) in watched.items()}}
    runners[floor] = floor_step
    runners[again], _ = make_step(copy.deepcopy(model), x, y)  # a second unwatched copy
    got = interleave(runners, reference="bare", block=block, repeats=repeats)
    base = got.median("bare")
    lines.append(
        f"{name}: bare step {base * 1e3:.3f} ms (median of {repeats} blocks of {block} steps)"
    )
    for label in labels:
        med = got.median(label)
        lines.append(
            f"  {label:<37} {med * 1e3:.3f} ms  {med / base:.3f}x"
            f"  (median of per-block ratios {got.ratio(label):.3f}x)"
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
