"""Overhead of GradientMonitor on ``model.fit``: the seed's California model, TensorFlow backend.

Configurations: unwatched fit ("plain"), a second unwatched one ("plain again": the noise
floor), ``every=1`` (every statistic on every step), ``every=10``, the default overhead budget
(5%), gradients only on every step, and "floor": the monitor installed but recording no step
(its wrapper around fit's train function and the unarmed traced step: the least any watched fit
costs).

Two workloads: the first 512 training rows as one batch (the notebook's measurement, one step per
epoch), and the full training split with batch 32 (516 steps per epoch). All configurations train
one and the same model, one fit after another, interleaved in one process in a shuffled order each
round (so a change of machine load does not favour one configuration). One model, because two
identically built Keras models can run several per cent apart for the whole process. A second
unwatched configuration ("plain again") shows how far two identical configurations land apart:
the noise floor of the ratios. Each fit's first epoch (which traces the train function, and for a
watched fit re-traces it) is left out, so the figures are steady-state time per epoch; the first
epoch's time is reported separately. Prints medians and ratios to unwatched fit, of wall time and
of this process's CPU time.

Usage: ``python benchmarks/bench_keras.py [--repeats N] [--data-home DIR]``
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from gradprobe.budget import Every, Tier  # noqa: E402
from gradprobe.experiments.data import california  # noqa: E402
from gradprobe.keras import GradientMonitor  # noqa: E402

PAUSE = 5.0  # a step's loop time above this many times the median is a pause of the machine


class EpochClock(keras.callbacks.Callback):
    """Wall time and process CPU time of each epoch, and the loop time of each step: from one
    call of fit's train function to the next (the train function is wrapped for the epoch, so
    every configuration pays the same extra Python call; no batch hook, so Keras keeps its
    asynchronous batch-end dispatch). ``steady`` is an epoch's time from its step loop times
    with pauses of the shared machine left out (steps above ``PAUSE`` times the median: other
    processes, not the monitor, whose slowest recorded step is under 2x)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []
        self.cpu: list[float] = []
        self.steady: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        model, self._calls = self.model, []
        fn = self._fn = model.train_function

        def timed(*args: object, **kwargs: object) -> object:
            self._calls.append(time.perf_counter())
            return fn(*args, **kwargs)

        model.train_function = timed
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        end = time.perf_counter()
        self.times.append(end - self._t0)
        self.cpu.append(time.process_time() - self._c0)
        self.model.train_function = self._fn
        gaps = np.diff(np.array([*self._calls, end]))
        if len(gaps) < 20:  # too few steps to tell a pause: the epoch's wall time
            self.steady.append(self.times[-1])
            return
        kept = gaps[gaps <= PAUSE * np.median(gaps)]
        self.steady.append(float(kept.mean()) * len(gaps))


def build() -> keras.Sequential:
    keras.utils.set_random_seed(0)
    layers = [keras.Input((8,))] + [keras.layers.Dense(64, activation="sigmoid") for _ in range(10)]
    model = keras.Sequential([*layers, keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def _floor() -> GradientMonitor:
    mon = GradientMonitor()
    mon.schedule = Every(1, Tier.NONE)  # watched, but no step records anything
    return mon


CONFIGS = {
    "plain": lambda: [],
    "plain again": lambda: [],
    "floor": lambda: [_floor()],
    "every=1": lambda: [GradientMonitor(every=1)],
    "every=10": lambda: [GradientMonitor(every=10)],
    "budget 5%": lambda: [GradientMonitor()],
    "grads every=1": lambda: [GradientMonitor(every=1, activations=False, backward=False)],
}


def bench(x: np.ndarray, y: np.ndarray, batch: int, epochs: int, repeats: int) -> dict:
    model = build()
    steady: dict[str, list[float]] = {n: [] for n in CONFIGS}
    cpu: dict[str, list[float]] = {n: [] for n in CONFIGS}
    wall: dict[str, list[float]] = {n: [] for n in CONFIGS}
    first: dict[str, list[float]] = {n: [] for n in CONFIGS}
    order = random.Random(0)
    for r in range(repeats + 1):  # round 0 warms up (imports, first traces)
        for name in order.sample(list(CONFIGS), len(CONFIGS)):
            clock = EpochClock()
            cbs = [clock, *CONFIGS[name]()]  # the clock first: it unwraps before the monitor ends
            model.fit(
                x, y, batch_size=batch, epochs=epochs, shuffle=False, callbacks=cbs, verbose=0
            )
            if r:
                steady[name].append(statistics.median(clock.steady[1:]))
                wall[name].append(statistics.median(clock.times[1:]))
                cpu[name].append(statistics.median(clock.cpu[1:]))
                first[name].append(clock.times[0])
    return {
        n: {
            "epoch_s": statistics.median(steady[n]),
            "wall_s": statistics.median(wall[n]),
            "cpu_s": statistics.median(cpu[n]),
            "first_epoch_s": statistics.median(first[n]),
        }
        for n in CONFIGS
    }


class _Rotate:
    """A schedule that cycles through the tiers step by step and times each step."""

    def __init__(self) -> None:
        self.times: dict[Tier, list[float]] = {t: [] for t in Tier}
        self._t = time.perf_counter()

    def tier(self, step: int) -> Tier:
        return Tier(step % 3)

    def done(self, step: int) -> None:
        now = time.perf_counter()
        self.times[self.tier(step)].append(now - self._t)
        self._t = now


def tier_costs(x: np.ndarray, y: np.ndarray, repeats: int) -> dict[Tier, float]:
    """Median step time of each tier, the tiers interleaved step by step in one fit (as the
    budget measures them): the most robust figure on a shared machine."""
    model = build()
    times: dict[Tier, list[float]] = {t: [] for t in Tier}
    for r in range(repeats + 1):
        mon = GradientMonitor()
        mon.schedule = rot = _Rotate()
        model.fit(x, y, batch_size=32, epochs=1, shuffle=False, callbacks=[mon], verbose=0)
        if r:
            for t in Tier:
                times[t].append(statistics.median(rot.times[t][6:]))
    return {t: statistics.median(v) for t, v in times.items()}


def report(title: str, res: dict, steps: int) -> None:
    base, base_cpu = res["plain"]["epoch_s"], res["plain"]["cpu_s"]
    base_wall = res["plain"]["wall_s"]
    print(f"\n{title}")
    print(
        f"{'config':<14} {'ms/step':>8} {'ratio':>7} {'wall ratio':>11} {'cpu ratio':>10}"
        f" {'first epoch s':>14}"
    )
    for name, r in res.items():
        print(
            f"{name:<14} {r['epoch_s'] / steps * 1e3:>8.3f} {r['epoch_s'] / base:>7.3f}"
            f" {r['wall_s'] / base_wall:>11.3f} {r['cpu_s'] / base_cpu:>10.3f}"
            f" {r['first_epoch_s']:>14.3f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--data-home", default=None)
    ap.add_argument("--full-only", action="store_true", help="only the full split, batch 32")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per fit of the full split")
    args = ap.parse_args()
    data = california(args.data_home)
    x, y = data.x_train, data.y_train
    print(f"keras {keras.__version__} ({keras.backend.backend()}), repeats={args.repeats}")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    if not args.full_only:
        report(
            "512 rows, one batch of 512 (30 epochs = 30 steps per fit)",
            bench(x[:512], y[:512], 512, 30, args.repeats),
            1,
        )
    n = -(-len(x) // 32)
    report(
        f"full split ({len(x)} rows), batch 32 ({n} steps per epoch, {args.epochs} epochs)",
        bench(x, y, 32, args.epochs, args.repeats),
        n,
    )
    costs = tier_costs(x, y, args.repeats)
    print("\nfull split, batch 32: tiers interleaved step by step in one fit (median ms/step)")
    for t, v in costs.items():
        print(f"{t.name.lower():<10} {v * 1e3:8.3f} {v / costs[Tier.NONE]:7.3f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
