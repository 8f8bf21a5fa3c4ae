"""gradprobe lab: batched seeds against one seed after the other, and sweep throughput.

Run: python benchmarks/bench_lab.py [--quick] [--threads N] [--estimate]

Everything is measured in this one process, interleaved (batched, sequential, batched, ...), and
reported as medians and ratios. Training only (the same records either way): the diagnosis of
each seed's records, which both paths share, is not part of the first two figures.

1. 64 seeds of the classification experiment's deep-sigmoid model (8 x Dense(8), batch 32).
2. The 10 x 64 California model on 512 rows (compute-bound): the automatic choice trains it seed
   after seed, so "auto" costs what sequential costs; forced batching is shown for reference.
   Needs the California cache: ../shared/data/california_housing (built into a temp folder).
3. Sweep throughput (cells per second, diagnosis and writing included) with 1 and 2 workers.
4. ``--estimate`` (alone): the time ``gradprobe sweep`` estimates against the time it takes.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from gradprobe.experiments import data as D
from gradprobe.experiments import torch_backend as tb
from gradprobe.experiments.spec import EXPERIMENTS, Variant
from gradprobe.lab import parse, plan, run_plan
from gradprobe.lab.batched import train_seeds
from gradprobe.lab.estimate import choose_batched
from gradprobe.lab.spec import Cell

SHARED = Path(os.environ.get("GRADPROBE_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def sequential(spec, data, train, seeds) -> None:  # type: ignore[no-untyped-def]
    for s in seeds:
        tb.train(Variant("v", spec), data, dataclasses.replace(train, seed=s))


def interleaved(fns: dict, repeats: int) -> dict[str, float]:  # type: ignore[type-arg]
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_seeds(name: str, spec, data, train, n: int, repeats: int) -> None:  # type: ignore[no-untyped-def]
    seeds = list(range(n))
    cell = Cell("x", (), spec, train, tuple(seeds))
    auto = choose_batched(cell, data.n_features, len(data.x_train))
    train_seeds(spec, data, train, seeds[:2])  # warm-up
    sequential(spec, data, train, seeds[:2])
    fns = {
        "batched": lambda: train_seeds(spec, data, train, seeds),
        "sequential": lambda: sequential(spec, data, train, seeds),
    }
    m = interleaved(fns, repeats)
    m["auto"] = m["batched"] if auto else m["sequential"]
    print(f"{name}: {n} seeds, median of {repeats}")
    for k in ("batched", "sequential", "auto"):
        print(f"  {k:<10} {m[k]:8.3f} s   ({m[k] / n * 1e3:7.1f} ms per seed)")
    print(
        f"  sequential / batched = {m['sequential'] / m['batched']:.1f}x;  automatic choice: "
        f"{'batched' if auto else 'sequential'} -> sequential / auto = "
        f"{m['sequential'] / m['auto']:.2f}x"
    )


def california(quick: bool) -> D.Dataset | None:
    script = SHARED / "data" / "california_housing" / "make_sklearn_cache.py"
    if not script.exists():
        print(f"California: skipped ({script} not found)")
        return None
    home = tempfile.mkdtemp()
    subprocess.run([sys.executable, str(script), home], check=True, capture_output=True)
    return D.california(home)


def bench_sweep(quick: bool) -> None:
    depths = "2,3,4,5,6,7" if quick else "2,3,4,5,6,7,8,9"
    raw = {"data": "digits", "depth": depths, "activation": "sigmoid,relu",
           "epochs": 1 if quick else 4, "seeds": 2, "batched": "off"}  # fmt: skip
    spec = parse(raw)
    rates = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as d:
            p = plan(spec, Path(d))
            t0 = time.perf_counter()
            s = run_plan(p, Path(d), workers=workers)
            wall = time.perf_counter() - t0
            assert s["status"] == "complete"
            rates[workers] = len(p.cells) / wall
            print(
                f"  {workers} worker(s): {len(p.cells)} cells in {wall:.1f} s = "
                f"{rates[workers]:.2f} cells/s (process start-up included)"
            )
    print(f"  2 workers / 1 worker = {rates[2] / rates[1]:.2f}x")


ESTIMATE_RUNS = (
    ("sweep", "classification", "--depth", "2,4,8", "--seeds", "3"),
    ("sweep", "classification", "--activation", "sigmoid,relu", "--depth", "2,6", "--seeds", "2",
     "--workers", "2"),
    ("sweep", "make_moons", "--depth", "2,4", "--seeds", "2"),
    ("remedies", "classification", "--variant", "deep-sigmoid", "--seeds", "2", "--only",
     "baseline,relu_he,batch_norm,adam"),
)  # fmt: skip


def bench_estimate() -> None:
    """The CLI's printed estimate against the measured wall time of the whole command."""
    import re

    exe = Path(sys.executable).with_name("gradprobe")
    for args in ESTIMATE_RUNS:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            out = subprocess.run([str(exe), *args, "--out", tmp, "-q"], capture_output=True,
                                 text=True, timeout=600)  # fmt: skip
            wall = time.perf_counter() - t0
        m = re.search(r"estimated ([\d.]+) (s|min|h)", out.stderr)
        est = float(m.group(1)) * {"s": 1, "min": 60, "h": 3600}[m.group(2)] if m else math.nan
        print(f"  {' '.join(args):<90} estimated {est:5.1f} s, took {wall:5.1f} s, "
              f"took/estimated {wall / est:.2f}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repeats and cells")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--estimate", action="store_true", help="only: sweep estimates vs wall time")
    args = ap.parse_args()
    if args.estimate:
        print(f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; the CLI's estimate:")
        bench_estimate()
        return
    torch.set_num_threads(args.threads)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, {args.threads} thread(s), load {os.getloadavg()[0]:.1f}"
    )
    exp = EXPERIMENTS["classification"]
    bench_seeds("classification deep-sigmoid", exp.variant("deep-sigmoid").model,
                D.classification(), exp.train, 64, 3 if args.quick else 5)  # fmt: skip
    cal = california(args.quick)
    if cal is not None:
        ce = EXPERIMENTS["california"]
        bench_seeds("California 10 x 64 sigmoid", ce.variant("sigmoid").model, cal, ce.train,
                    16 if args.quick else 64, 3)  # fmt: skip
    print("sweep throughput (digits, 4 epochs (--quick: 1), 2 seeds per cell, one by one):")
    bench_sweep(args.quick)


if __name__ == "__main__":
    main()
