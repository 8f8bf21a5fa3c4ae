"""What watching costs on steps that record (almost) nothing: the fixed cost of a schedule.

Run: python benchmarks/bench_idle.py [--blocks N]

Two copies of the California-size MLP (10x64 sigmoid, batch 512, one torch thread) train in
alternating blocks of 50 steps: one bare, one watched with a schedule that records next to
nothing, ``every=10**9`` (the fixed schedule) and ``budget=0.001`` (the budget: it still times
every step, asks the schedule and records a step now and then). The ratio of the medians of the
thread's CPU time per step is the fixed cost each schedule adds to every step, which the budget
cannot see (it measures costs against its own unrecorded steps).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _timing import mlp, optimizer, train_step
from torch import nn

import gradprobe


def ratio(watch_kwargs: dict, blocks: int, steps: int = 50) -> float:
    torch.manual_seed(0)
    x, y = torch.randn(512, 8), torch.randn(512, 1)
    bare, watched = mlp(10, 64, 8, nn.Sigmoid), mlp(10, 64, 8, nn.Sigmoid)
    ob, ow = optimizer(bare), optimizer(watched)
    gradprobe.watch(watched, ow, **watch_kwargs)
    runs = {"bare": train_step(bare, ob, x, y), "watched": train_step(watched, ow, x, y)}
    times: dict[str, list[float]] = {"bare": [], "watched": []}
    for b in range(blocks):
        for name in ("bare", "watched") if b % 2 else ("watched", "bare"):
            t = time.thread_time()
            for _ in range(steps):
                runs[name]()
            times[name].append((time.thread_time() - t) / steps)
    return statistics.median(times["watched"]) / statistics.median(times["bare"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=60)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for label, kw in (("every=10**9", {"every": 10**9}), ("budget=0.001", {"budget": 0.001})):
        print(f"{label:14s} {ratio(kw, args.blocks):.4f}x bare (CPU time, California-size MLP)")


if __name__ == "__main__":
    main()
