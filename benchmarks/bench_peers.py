"""Cost of watching with gradprobe beside the tools a user would pick instead, side by side.

Run: python benchmarks/bench_peers.py [--quick] [--models small|all]
Peers (Lightning's ``grad_norm``, gradviz, gradlens, Cockpit with BackPACK), kept off the torch
that is installed: ``INSTALL`` below. A peer that is not installed is skipped with a note.

Every setting trains its own identical copy of each model with the same loop (zero_grad, forward,
MSE loss, backward, SGD step), plus what its tool's README asks the loop to do. All copies run
in one process; blocks of steps alternate between them in a shuffled order; each figure is the
median over the rounds of a block's time per step divided by the bare copy's block of the same
round. A second bare copy gives the noise floor, and the capture floor (no-op module forward
hooks, a tensor hook on every output, optimizer hooks reading every ``.grad``) the least any
hook-based monitor that sees activations and dL/dh pays. Printed: one markdown table, rows =
settings, columns = models, with the date, machine, load average and command.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib.metadata
import inspect
import os
import platform
import sys
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from _timing import CaptureFloor, Step, Timings, interleave, mlp, optimizer, train_step
from torch import nn

import gradprobe.torch as gt

# BackPACK requires torchvision, which would replace the installed torch: it and Cockpit go in
# without their dependencies (the extra lists those).
INSTALL = (
    'pip install "gradprobe[bench]" && pip install --no-deps'
    " cockpit-for-pytorch==1.0.2 backpack-for-pytorch==1.7.1"
)


class Missing(Exception):
    """A peer that cannot run here; the message says why (and how to install it)."""


@dataclass
class Run:
    """One setting on one model copy: its training step, and how to take its hooks off."""

    step: Step
    close: Callable[[], None] = lambda: None
    describe: Callable[[], str] = lambda: ""


@dataclass(frozen=True)
class Model:
    name: str
    depth: int
    width: int
    d_in: int
    act: type[nn.Module]
    batch: int
    block: int  # steps per timed block
    repeats: int  # rounds

    def build(self) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)
        x, y = torch.randn(self.batch, self.d_in), torch.randn(self.batch, 1)
        return mlp(self.depth, self.width, self.d_in, self.act), x, y


MODELS = {
    "small": [
        Model("10x128 ReLU MLP, batch 64", 10, 128, 32, nn.ReLU, 64, 25, 61),
        # California housing's shape: 8 features, Keras-default Glorot init
        Model("California 10x64 sigmoid, batch 512", 10, 64, 8, nn.Sigmoid, 512, 25, 61),
    ],
    "large": [Model("50x512 ReLU MLP, batch 512", 50, 512, 512, nn.ReLU, 512, 5, 15)],
}

Build = Callable[[nn.Module, torch.Tensor, torch.Tensor], Run]


# ---------------------------------------------------------------------------------- settings
def bare(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Run:
    return Run(train_step(model, optimizer(model), x, y))


def capture_floor(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Run:
    opt = optimizer(model)
    floor = CaptureFloor(model, opt)
    return Run(train_step(model, opt, x, y), floor.detach)


def default_schedule() -> str:
    """What ``watch(model, optimizer)`` records when no schedule is passed."""
    params = inspect.signature(gt.watch).parameters
    budget = params.get("budget")
    if budget is not None and isinstance(budget.default, int | float):
        return f"overhead budget {budget.default:.0%}"
    every = params["every"].default
    return f"every={every}, every statistic"


def _schedule_of(mon: object) -> str:
    """What an adaptive default settled on, from ``Monitor.cost`` where the monitor has it."""
    cost = getattr(mon, "cost", None)
    if not isinstance(cost, dict) or "budget" not in cost:
        return ""
    said = (
        f"gradients on {cost['share_gradients']:.0%} of steps,"
        f" every statistic on {cost['share_all']:.1%}"
    )
    measured = [f"{k} {cost[k]:+.0%}" for k in ("gradients", "all") if k in cost]
    if measured:
        said += f" (measured cost of a step: {', '.join(measured)};"
        said += f" expected overall {cost['expected']:+.1%})"
    return said


def gradprobe(**kw: object) -> Build:
    def build(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Run:
        opt = optimizer(model)
        mon = gt.watch(model, opt, **kw)  # type: ignore[arg-type]
        return Run(train_step(model, opt, x, y), mon.detach, lambda: _schedule_of(mon))

    return build


def norm_dict(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Run:
    """Lightning's pattern: ``self.log_dict(grad_norm(self, norm_type=2))`` in
    ``on_before_optimizer_step``, i.e. after backward, before the step; the dicts are kept."""
    try:
        from lightning.pytorch.utilities import grad_norm
    except ImportError as e:
        raise Missing(f"lightning is not installed ({e})") from e
    opt, logged = optimizer(model), []

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        logged.append(grad_norm(model, norm_type=2))
        opt.step()

    return Run(step)


def gradviz(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Run:
    """README: ``gv = GradViz(model); gv.attach()``; ``gv.step()`` after each optimizer step."""
    try:
        from gradviz import GradViz
    except ImportError as e:
        raise Missing(f"gradviz is not installed: {INSTALL}") from e
    opt, gv = optimizer(model), GradViz(model)
    gv.attach()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        gv.step()

    return Run(step, gv.detach)


def gradlens(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Run:
    """README: ``monitor = gl.watch(model)``; ``monitor.log(loss=loss.item())`` each step."""
    try:
        import gradlens as gl
    except ImportError as e:
        raise Missing(f"gradlens is not installed: {INSTALL}") from e
    opt, monitor = optimizer(model), gl.watch(model)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        monitor.log(loss=loss.item())

    return Run(step, monitor.close)


def _import_cockpit() -> types.ModuleType:
    """Cockpit 1.0.2 reads its version through ``pkg_resources``, which setuptools >= 81 no
    longer ships: where it is gone, a stand-in answering that one question is put in its place."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        shim = types.ModuleType("pkg_resources")

        class DistributionNotFound(Exception):
            pass

        def get_distribution(name: str) -> types.SimpleNamespace:
            try:
                return types.SimpleNamespace(version=importlib.metadata.version(name))
            except importlib.metadata.PackageNotFoundError as e:
                raise DistributionNotFound(name) from e

        shim.DistributionNotFound = DistributionNotFound  # type: ignore[attr-defined]
        shim.get_distribution = get_distribution  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = shim
    import cockpit

    return cockpit


def cockpit_gradnorm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Run:
    """Cockpit's tutorial loop with one quantity, GradNorm, on every step: the model and the
    loss extended by BackPACK, the backward pass inside ``with cockpit(step, info=...)``."""
    try:
        from backpack import extend

        cockpit = _import_cockpit()
        from cockpit import quantities
        from cockpit.utils.schedules import linear
    except ImportError as e:
        raise Missing(f"cockpit-for-pytorch or backpack-for-pytorch is missing: {INSTALL}") from e
    model = extend(model)
    loss_fn = extend(nn.MSELoss())
    # BackPACK's full backward hooks warn once that the input needs no gradient (it needs none)
    warnings.filterwarnings("ignore", "Full backward hook is firing", UserWarning)
    opt = optimizer(model)
    cp = cockpit.Cockpit(model.parameters(), quantities=[quantities.GradNorm(linear(1))])
    count = [0]

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        info = {"batch_size": x.shape[0], "loss": loss, "optimizer": opt}
        with cp(count[0], info=info):
            loss.backward(create_graph=cp.create_graph(count[0]))
        opt.step()
        count[0] += 1

    return Run(step)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


@dataclass(frozen=True)
class Setting:
    label: str
    build: Build
    warmup: int = 3  # steps before timing


def settings(quick: bool) -> list[Setting]:
    # an adaptive default revises its plan every 64 steps, and corrects it by what the first
    # quiet stretch (steps ~515-527) measures
    settle = 20 if quick else 600
    return [
        Setting("second bare copy (noise floor)", bare),
        Setting("capture floor (no-op hooks, no statistics)", capture_floor),
        Setting(f"gradprobe default `watch(m, opt)` ({default_schedule()})", gradprobe(), settle),
        Setting(
            "gradprobe gradients only, every=1",
            gradprobe(every=1, activations=False, backward=False),
        ),
        Setting("gradprobe every statistic, every=1", gradprobe(every=1)),
        Setting("gradprobe every statistic, every=10", gradprobe(every=10)),
        Setting(
            f"per-parameter norm dict (Lightning {_version('lightning')} `grad_norm`)", norm_dict
        ),
        Setting(f"gradviz {_version('gradviz')}", gradviz),
        Setting(f"gradlens {_version('gradlens')}", gradlens),
        Setting(f"Cockpit {_version('cockpit-for-pytorch')} GradNorm", cockpit_gradnorm),
    ]


# ---------------------------------------------------------------------------------- running
@dataclass
class Column:
    model: Model
    timings: Timings | None = None
    notes: dict[str, str] = field(default_factory=dict)  # label -> why skipped / what it chose
    rounds: str = ""  # "R rounds of B steps"


def measure(model: Model, chosen: list[Setting], quick: bool, rounds: float = 1.0) -> Column:
    net, x, y = model.build()
    col = Column(model)
    runners: dict[str, Step] = {"bare": bare(copy.deepcopy(net), x, y).step}
    runs: dict[str, Run] = {}
    for s in chosen:
        try:
            runs[s.label] = s.build(copy.deepcopy(net), x, y)
        except Missing as e:
            col.notes[s.label] = f"skipped: {e}"
            continue
        runners[s.label] = runs[s.label].step
    block, repeats = (2, 3) if quick else (model.block, max(3, round(model.repeats * rounds)))
    col.rounds = f"{repeats} rounds of {block} steps"
    col.timings = interleave(
        runners,
        reference="bare",
        block=block,
        repeats=repeats,
        warmup_of={s.label: s.warmup for s in chosen},
    )
    for label, run in runs.items():
        if said := run.describe():
            col.notes[label] = said
        run.close()
    return col


def table(columns: list[Column], chosen: list[Setting]) -> list[str]:
    head = ["setting"] + [
        f"{c.model.name} (bare {c.timings.median('bare') * 1e3:.3g} ms)"  # type: ignore[union-attr]
        for c in columns
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in chosen:
        cells = [s.label]
        for c in columns:
            t = c.timings
            ok = t is not None and s.label in t.times
            cells.append(f"{t.ratio(s.label):.2f}x" if ok else "skipped")  # type: ignore[union-attr]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def busy_seconds() -> tuple[float, float] | None:
    """CPU seconds the whole machine has spent busy (Linux ``/proc/stat``) and this process's
    own, so a run can tell how much other processes took from it."""
    try:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    own = os.times()
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK"), own.user + own.system


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few short blocks (a smoke run)")
    ap.add_argument(
        "--models",
        choices=["small", "large", "all"],
        default="all",
        help="small: the two small models; large: the 50x512 one",
    )
    ap.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's own choice)"
    )
    ap.add_argument(
        "--rounds", type=float, default=1.0, help="scale the number of rounds (default 1.0)"
    )
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    models = [m for key in ("small", "large") if args.models in (key, "all") for m in MODELS[key]]
    chosen = settings(args.quick)
    load0, busy0 = os.getloadavg()[0], busy_seconds()
    started = datetime.datetime.now(datetime.UTC)
    columns = []
    for m in models:
        columns.append(measure(m, chosen, args.quick, args.rounds))
        print(f"measured {m.name}", file=sys.stderr, flush=True)
    load1, busy1 = os.getloadavg()[0], busy_seconds()
    wall = (datetime.datetime.now(datetime.UTC) - started).total_seconds()
    minutes = wall / 60
    cpu = platform.processor() or platform.machine()
    print(
        f"Measured {started:%Y-%m-%d %H:%M} UTC in {minutes:.1f} min on {cpu},"
        f" {os.cpu_count()} cores, torch {torch.__version__} at {torch.get_num_threads()} threads;"
        f" load average (1 min) {load0:.2f} before, {load1:.2f} after (this run included)"
    )
    if busy0 is not None and busy1 is not None:
        others = (busy1[0] - busy0[0]) - (busy1[1] - busy0[1])
        print(f"Other processes kept {others / wall:.2f} cores busy on average during the run")
    cmd = " ".join(
        ["python benchmarks/bench_peers.py", *(argv if argv is not None else sys.argv[1:])]
    )
    print(f"Command: `{cmd.strip()}`; peers: `{INSTALL}`")
    print(
        "Ratios: per-step time / bare copy's, median over rounds of interleaved blocks ("
        + "; ".join(f"{c.model.name}: {c.rounds}" for c in columns)
        + ("; --quick: not a measurement)" if args.quick else ")")
    )
    print()
    for line in table(columns, chosen):
        print(line)
    notes = [(c.model.name, label, note) for c in columns for label, note in c.notes.items()]
    if notes:
        print()
    for model_name, label, note in notes:
        print(f"- {label}, {model_name}: {note}")


if __name__ == "__main__":
    main()
