"""Time of the fused C reductions (gradprobe._fused) per call, medians of interleaved repeats.

Run: python benchmarks/bench_native.py [--against OLD.so] [--repeats 51]

Each workload is one call of :mod:`gradprobe.torch._native` on float32 tensors already in cache
(as the monitor's hooks see them). With ``--against``, a second build of the extension (for
example the one before a change, copied aside) is loaded from that file and every call is timed
with both builds alternately in one process; the ratio new / old of the medians is printed, so
drifts of the machine's speed hit both alike.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import math
import platform
import statistics
import time
from collections.abc import Callable
from types import ModuleType

import torch

from gradprobe.torch import _native
from gradprobe.torch._activations import SIGMOID

N = 262_144  # elements of the in-cache workloads (1 MiB of float32)
LARGE = 4_194_304  # over the thread split threshold (2**20 elements)


def workloads() -> dict[str, Callable[[], object]]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N, generator=gen)
    sig = torch.sigmoid(3 * torch.randn(512, N // 512, generator=gen))
    relu = torch.relu(torch.randn(512, N // 512, generator=gen))
    conv = torch.relu(torch.randn(16, 64, 16, 16, generator=gen))
    big = [torch.randn(LARGE // 4, generator=gen) for _ in range(4)]
    y = x + 1e-3
    return {
        f"moments, {N:,} float32": lambda: _native.moments([x]),
        f"sq_norms, {N:,} float32": lambda: _native.sq_norms([x]),
        f"sq_dists, {N:,} float32": lambda: _native.sq_dists([x], [y]),
        "sq_norm_one, same tensor": lambda: _native.sq_norm_one(x),
        "output_stats, sigmoid (512, 512), units": lambda: _native.output_stats(
            [sig], SIGMOID.low, SIGMOID.high, -1
        ),
        "output_stats_one, sigmoid (512, 512), units": lambda: _native.output_stats_one(
            sig, SIGMOID.low, SIGMOID.high, -1
        ),
        "output_stats_one, relu (512, 512), no band": lambda: _native.output_stats_one(
            relu, -math.inf, math.inf, -1
        ),
        "output_stats_one, relu conv (16, 64, 16, 16)": lambda: _native.output_stats_one(
            conv, -math.inf, math.inf, 1
        ),
        f"moments, 4 x {LARGE // 4:,} float32 (threads)": lambda: _native.moments(big),
        f"sq_norms, 4 x {LARGE // 4:,} float32 (threads)": lambda: _native.sq_norms(big),
    }


def load_build(path: str) -> ModuleType:
    """The extension built into ``path``, loaded beside the installed one."""
    loader = importlib.machinery.ExtensionFileLoader("_fused", path)
    spec = importlib.util.spec_from_file_location("_fused", path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def time_call(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / 1e3  # microseconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--against", help="another build of gradprobe._fused (a .so) to compare")
    ap.add_argument("--repeats", type=int, default=51)
    args = ap.parse_args()
    if not _native.available():
        raise SystemExit("gradprobe._fused is not built")
    builds = {"now": _native._fused}
    if args.against:
        builds = {"old": load_build(args.against), **builds}
    print(f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}")
    print(f"medians of {args.repeats} calls, microseconds")
    head = f"{'workload':48s}" + "".join(f"{name:>10s}" for name in builds)
    print(head + ("   now/old" if args.against else ""))
    for label, fn in workloads().items():
        times: dict[str, list[float]] = {name: [] for name in builds}
        for mod in builds.values():  # warm up
            _native._fused = mod
            fn()
        for _ in range(args.repeats):
            for name, mod in builds.items():
                _native._fused = mod
                times[name].append(time_call(fn))
        _native._fused = builds["now"]
        med = {name: statistics.median(ts) for name, ts in times.items()}
        line = f"{label:48s}" + "".join(f"{m:10.1f}" for m in med.values())
        if args.against:
            line += f"{med['now'] / med['old']:10.2f}"
        print(line)


if __name__ == "__main__":
    main()
