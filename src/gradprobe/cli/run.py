"""``gradprobe list``, ``run``, ``plot`` and ``demo``: the built-in experiments from the shell."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from gradprobe.cli.lab import run_config_options
from gradprobe.errors import DataError, UnknownChoiceError, UsageError
from gradprobe.experiments.init import INITS
from gradprobe.experiments.spec import ACTIVATIONS, EXPERIMENTS, OPTIMIZERS, resolve
from gradprobe.records import grad_norm_by_depth
from gradprobe.run import Run, load_run

err = Console(stderr=True)


class _Bar:
    """The runner's progress, shown as a rich progress bar on stderr."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: Any = None

    def start(self, variant: str, total_steps: int) -> None:
        self.task = self.progress.add_task(variant, total=total_steps, loss=math.nan)

    def advance(self, step: int, loss: float) -> None:
        self.progress.update(self.task, advance=1, loss=loss)


def _progress(quiet: bool) -> Progress:
    return Progress(
        TextColumn("{task.description:<18}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("loss {task.fields[loss]:.4g}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=quiet,
    )


def _fmt(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3g}"


def print_tables(run: Run, console: Console) -> None:
    """One table per variant: per-layer norms, first/last ratio, loss, accuracy."""
    params, layers = run.table("params"), run.table("layers")
    by_name = {v["name"]: v for v in run.summary.get("variants", [])}
    for name in run.variants:
        p = params[params["variant"] == name]
        norms = grad_norm_by_depth(p)
        step = int(p["step"].min()) if len(p) else 0
        lay = layers[(layers["variant"] == name) & (layers["step"] == step)].sort_values("depth")
        t = Table(
            title=f"{run.config.get('experiment')} / {name}: first recorded step ({step})",
            title_justify="left",
        )
        for col in ("layer", "||dL/dW||", "||dL/dh||", "act RMS", "saturated", "dead"):
            t.add_column(col, justify="right")
        lay_rows = list(lay.itertuples())
        for i, norm in enumerate(norms):
            r = lay_rows[i] if i < len(lay_rows) else None
            label = f"{i + 1}" + (
                " (input)" if i == 0 else " (output)" if i == len(norms) - 1 else ""
            )
            t.add_row(
                label,
                _fmt(norm),
                _fmt(r.backward_norm) if r else "-",
                _fmt(r.act_rms) if r else "-",
                _fmt(r.saturated_frac) if r else "-",
                _fmt(r.dead_frac) if r else "-",
            )
        console.print(t)
        s = by_name.get(name, {})
        bits = [
            f"first/last gradient ratio {_fmt(s.get('first_last_ratio'))}",
            f"final loss {_fmt(s.get('final_loss'))}",
        ]
        if "test_loss" in s:
            bits.append(f"test loss {_fmt(s['test_loss'])}")
        if "test_accuracy" in s:
            bits.append(
                f"train/test accuracy {_fmt(s.get('train_accuracy'))}/{_fmt(s['test_accuracy'])}"
            )
        if "first_layer_true_mean_abs_grad" in s:
            bits.append(
                f"first layer: true mean |dL/dW1| {_fmt(s['first_layer_true_mean_abs_grad'])} vs "
                f"notebook estimate {_fmt(s['notebook_estimate_mean_abs'])}"
            )
        console.print("  " + "; ".join(bits) + "\n")
    if run.config.get("experiment") == "classification":
        console.print(
            "[dim]Why the notebook's estimate (W_before - W_after)/lr is not the gradient: Adam "
            "divides each step by the running RMS of the gradient, so every weight moves by about "
            "lr per step whatever the gradient's size; the estimate counts steps, not gradient.[/]"
        )


experiment_arg = click.argument("experiment", metavar="EXPERIMENT")


def _options(f: Any) -> Any:
    opts = [
        click.option("--variant", help="Variant(s) to run, comma-separated (default: all)."),
        click.option("--activation", help=f"Activation(s): {', '.join(ACTIVATIONS)}."),
        click.option("--depth", type=int, help="Hidden layers."),
        click.option("--width", type=int, help="Units per hidden layer."),
        click.option("--init", help=f"Initialisation: {', '.join(INITS)}."),
        click.option("--optimizer", help=f"Optimizer: {', '.join(OPTIMIZERS)}."),
        click.option("--lr", type=float, help="Learning rate."),
        click.option("--epochs", type=int, help="Epochs."),
        click.option("--batch-size", type=int, help="Batch size (0: all rows)."),
        click.option("--rows", type=int, help="Training rows used (0: all)."),
        click.option("--seed", type=int, help="Random seed (same seed, same numbers)."),
        click.option(
            "--every",
            type=int,
            default=None,
            help="Record every N-th step (default: often enough for a few hundred records).",
        ),
        click.option(
            "--seeds",
            type=int,
            default=None,
            help="Seeds per variant: the first is recorded, the others give the outcome's "
            "spread (default: 5 for classification, else 1).",
        ),
        click.option("--framework", default="torch", show_default=True, help="torch or keras."),
        click.option(
            "--data-home",
            type=click.Path(file_okay=False),
            help="scikit-learn data folder holding the California Housing cache.",
        ),
        click.option(
            "--out",
            type=click.Path(file_okay=False),
            help="Run directory (default runs/<experiment>-<timestamp>).",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


@dataclasses.dataclass
class Produced:
    """A finished run and what was written for it: plots and the report."""

    outcome: Any
    run_dir: Path
    plots: list[Path]
    report: Path


def produce(
    experiment: str,
    out: str | None,
    progress: Progress,
    seeds: int | None = None,
    **kw: Any,
) -> Produced:
    """Resolve, train, render every figure once, write plots/ and the report; prints nothing.

    ``every`` of None records as often as keeps a variant within a few hundred recorded steps
    (:func:`gradprobe.experiments.runner.auto_every`); ``seeds`` of None: the experiment's
    default number of seeds."""
    from gradprobe.experiments.runner import (
        auto_every,
        default_run_dir,
        load_dataset,
        run_experiment,
    )
    from gradprobe.report import write_report
    from gradprobe.views.plots import render_run_figures, save_run_plots

    every = kw.pop("every", None)
    auto = every is None and "every" not in _toml(kw.get("config"))
    config = resolve(experiment, every=every, **kw)
    if seeds is not None and seeds < 1:
        raise UsageError(f"--seeds must be a whole number >= 1, got {seeds}")
    run_dir = Path(out) if out else default_run_dir(experiment)
    data = load_dataset(config)
    if auto:
        config = dataclasses.replace(config, every=auto_every(config, data))
    outcome = run_experiment(config, run_dir, progress=_Bar(progress), data=data, seeds=seeds)
    figures = render_run_figures(outcome.run)
    plots = save_run_plots(outcome.run, figures)
    report = write_report(outcome.run, figures=figures, findings=outcome.findings)
    return Produced(outcome, run_dir, plots, report)


def _toml(path: str | None) -> dict[str, Any]:
    """The keys of a --config TOML file (empty without one; resolve reports a bad file)."""
    import tomllib

    try:
        return tomllib.loads(Path(path).read_text()) if path else {}
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return {}


def show(done: Produced, as_json: bool, tell: bool = True) -> Run:
    """Print a produced run: its JSON summary, or tables, paths, verdicts and the closing
    sentence (``tell``); returns the run."""
    from gradprobe.cli.diagnose import print_verdicts

    outcome = done.outcome
    console = Console(file=sys.stderr if as_json else sys.stdout)
    if as_json:
        click.echo(json.dumps(outcome.run.summary, default=str))
    else:
        print_tables(outcome.run, console)
        console.print(
            f"run directory: {done.run_dir}  ({len(done.plots)} plots in {done.run_dir / 'plots'})"
        )
        console.print(f"report: {done.report}")
        print_verdicts(outcome.findings, outcome.run.variants, console)
        story = outcome.run.summary.get("story")
        if story and tell:
            console.print(f"\n[bold]{story}[/]\n", soft_wrap=True)
    if outcome.status != "complete":
        err.print(f"[yellow]partial run: {outcome.message}[/]")
    return outcome.run


def execute(
    experiment: str,
    as_json: bool,
    quiet: bool,
    out: str | None,
    seeds: int | None = None,
    tell: bool = True,
    **kw: Any,
) -> Run:
    """Produce and show one run (see :func:`produce`); returns the loaded run."""
    with _progress(quiet or as_json) as progress:
        done = produce(experiment, out, progress, seeds, **kw)
    return show(done, as_json, tell)


@click.command("list")
def list_cmd() -> None:
    """List the built-in experiments and their variants."""
    for exp in EXPERIMENTS.values():
        click.echo(f"{exp.name}: {exp.title}")
        click.echo(f"  {exp.description}")
        for v in exp.variants:
            m = v.model
            click.echo(
                f"  - {v.name:<16} {m.depth} x Dense({m.width}, {m.activation}) "
                f"+ Dense(1, {m.output_activation})  {v.note}"
            )


@click.command("run")
@experiment_arg
@_options
@run_config_options
def run_cmd(experiment: str, as_json: bool, quiet: bool, out: str | None, **kw: Any) -> None:
    """Run a built-in experiment (see 'gradprobe list'): train, record, plot, summarise."""
    if experiment not in EXPERIMENTS:
        raise UnknownChoiceError("experiment", experiment, EXPERIMENTS)
    run = execute(experiment, as_json, quiet, out, **kw)
    if run.status.get("status") != "complete":
        sys.exit(1 if "non-finite" in run.status.get("message", "") else 130)


@click.command("plot")
@click.argument("run_dir", type=click.Path())
def plot_cmd(run_dir: str) -> None:
    """(Re)draw the plots of a run directory."""
    from gradprobe.views.plots import save_run_plots

    run = load_run(run_dir)
    if run.table("params").empty:
        raise DataError(f"{run_dir}: the run recorded no gradients yet; nothing to plot")
    for p in save_run_plots(run):
        click.echo(str(p))
    if run.partial:
        err.print(f"[yellow]note: partial run ({run.status.get('message', '')})[/]")


def process_age() -> float | None:
    """Seconds since this process started (Linux: from /proc), or None where unknown."""
    import os

    try:
        stat = Path("/proc/self/stat").read_text()
        start = int(stat.rsplit(")", 1)[1].split()[19])  # field 22: start time, clock ticks
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def _elapsed(t0: float) -> float:
    """The demo's time: from process start (interpreter and imports included) where known,
    else from ``t0`` (a ``time.perf_counter()`` reading)."""
    import time

    age = process_age()
    return age if age is not None else time.perf_counter() - t0


@contextlib.contextmanager
def settled_gc() -> Iterator[None]:
    """Import what the demo uses with the garbage collector off (imports make long-lived objects
    only), take every object alive then out of its reach (:func:`gc.freeze`) and collect
    rarely (gen0 at 10 000 allocations, older generations every 50): otherwise full collections
    rescan the ~300 000 objects of torch, pandas and matplotlib again and again, 1-1.3 s of CPU
    over a demo, for 20 MB more peak memory. Cyclic garbage is still collected; the collector's
    thresholds are restored on exit. The frozen objects stay frozen: they live as long as the
    process, and the interpreter's last collections at exit then skip them (0.5 s)."""
    import gc

    threshold, enabled = gc.get_threshold(), gc.isenabled()
    gc.disable()
    try:
        import gradprobe.experiments.runner
        import gradprobe.experiments.torch_backend
        import gradprobe.report
        import gradprobe.views.plots  # noqa: F401

        gc.freeze()
        gc.set_threshold(10_000, 50, 50)
    finally:
        if enabled:
            gc.enable()
    try:
        yield
    finally:
        gc.set_threshold(*threshold)


def _torch_threads(n: int) -> int:
    """Set torch's intra-op threads to ``n``; returns the previous number."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    return before


@click.command("demo")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for the two runs (default runs/demo-<timestamp>).",
)
@click.option(
    "--data-home",
    type=click.Path(file_okay=False),
    help="scikit-learn data folder holding the California Housing cache.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option(
    "--epochs", type=int, default=None, help="Epochs of both experiments (default: theirs)."
)
@click.option(
    "--seeds",
    type=int,
    default=None,
    help="Seeds per variant (default: 5 for classification, 1 for California).",
)
def demo_cmd(
    out: str | None, data_home: str | None, quiet: bool, epochs: int | None, seeds: int | None
) -> None:
    """Reproduce both seed notebooks, done right: real training, plots, reports, and one closing
    sentence per experiment with the measured numbers."""
    import time

    t0 = time.perf_counter()
    with settled_gc():
        _demo(t0, out, data_home, quiet, epochs, seeds)


def _demo(
    t0: float,
    out: str | None,
    data_home: str | None,
    quiet: bool,
    epochs: int | None,
    seeds: int | None,
) -> None:
    from gradprobe.experiments.runner import default_run_dir

    root = Path(out) if out else default_run_dir("demo")
    click.echo(f"gradprobe demo: both seed experiments, written to {root}\n")
    stories = []
    budget = {"epochs": epochs}
    # One experiment after the other: both are CPU-bound Python loops, and in two threads they
    # fought over the GIL (1 s more CPU, no faster on two cores). Tiny nets run best on one
    # torch thread.
    threads = _torch_threads(1)
    try:
        with _progress(quiet) as progress:
            cls = produce("classification", str(root / "classification"), progress, seeds, **budget)
            try:
                cal_done: Produced | DataError = produce(
                    "california",
                    str(root / "california"),
                    progress,
                    seeds,
                    data_home=data_home,
                    **budget,
                )
            except DataError as exc:
                cal_done = exc
    finally:
        _torch_threads(threads)
    stories.append(show(cls, False, tell=False).summary.get("story", ""))
    if isinstance(cal_done, DataError):
        err.print(f"[yellow]California experiment skipped: {cal_done}[/]")
        err.print(
            "To get the data: run once with internet access (scikit-learn downloads it), or "
            "pass --data-home DIR / set SCIKIT_LEARN_DATA to a folder with its cache."
        )
    else:
        stories.append(show(cal_done, False, tell=False).summary.get("story", ""))
    console = Console()
    console.rule("what the demo shows")
    for story in filter(None, stories):
        console.print(story + "\n", soft_wrap=True)
    console.print(
        f"reports: {root / 'classification' / 'report.html'}"
        + (f", {root / 'california' / 'report.html'}" if len(stories) > 1 else "")
        + f"  (demo took {_elapsed(t0):.1f} s)",
        soft_wrap=True,
    )
