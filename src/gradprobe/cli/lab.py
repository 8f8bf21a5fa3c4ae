"""``gradprobe sweep`` and ``gradprobe remedies``: many configurations and seeds in one command."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from gradprobe.cli._output import say
from gradprobe.errors import UsageError
from gradprobe.lab.spec import AXES

err = Console(stderr=True)  # resolves sys.stderr when printing (CliRunner, redirects)
LARGE_S = 30.0  # sweeps estimated above this print a notice before they start


def _axis_options(f: Any) -> Any:
    for key in reversed(AXES):
        f = click.option(f"--{key.replace('_', '-')}", key, help=f"{key}: comma-separated values.")(
            f
        )
    return f


RUN_EXTRA = ("norm", "residual", "residual_scale", "clip")


def run_config_options(f: Any) -> Any:
    """The options ``gradprobe run`` needs beyond its own to set everything a sweep can: norm,
    residual, residual scale and clipping (one value each, checked by the shared option table,
    :data:`gradprobe.experiments.spec.OPTIONS`), and ``--config FILE.toml`` (the same keys, one
    value each; flags override the file). Each arrives as a keyword for
    :func:`gradprobe.experiments.spec.resolve`."""
    from gradprobe.experiments.spec import OPTIONS, flag

    opts = [click.option(flag(k), k, help=OPTIONS[k].help) for k in RUN_EXTRA]
    opts.append(
        click.option(
            "--config",
            type=click.Path(dir_okay=False),
            help="A TOML file of run options (the keys of gradprobe sweep, one value each).",
        )
    )
    for o in reversed(opts):
        f = o(f)
    return f


def _common(f: Any) -> Any:
    opts = [
        click.option("--data", "data_file", help="A .csv or .parquet file to train on."),
        click.option("--target", help="Target column of --data."),
        click.option("--task", help="regression, binary or multiclass (default: inferred)."),
        click.option("--data-params", help="Generator parameters, e.g. n_samples=300,noise=0.2."),
        click.option("--variant", help="Variant of a built-in experiment to start from."),
        click.option("--seeds", help="Number of seeds, or a comma-separated list (default 3)."),
        click.option("--every", help="Record every N-th step, or auto (default: ~100 records)."),
        click.option("--batched", help="auto (default), on or off: seeds as one batched model."),
        click.option("--workers", type=int, default=1, show_default=True, help="Local processes."),
        click.option("--executor", default="local", show_default=True, help="local or ray."),
        click.option("--address", help="Ray cluster address (with --executor ray)."),
        click.option("--data-home", type=click.Path(file_okay=False), help="scikit-learn data."),
        click.option("--out", type=click.Path(file_okay=False), help="Sweep directory."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _raw(source: str | None, data_file: str | None, **kw: Any) -> tuple[dict[str, Any], str]:
    """The raw sweep keys from a spec file or the command line (options override the file)."""
    from gradprobe.lab.spec import load_toml

    raw: dict[str, Any] = {}
    where = "command line"
    if source and source.lower().endswith(".toml"):
        raw, where = load_toml(source), source
    elif source:
        name, _, params = source.partition(":")
        raw["data"] = name
        if params:
            raw["data_params"] = params
    if data_file:
        if "data" in raw and where == "command line":
            raise UsageError(f"give either a dataset ({raw['data']}) or --data FILE, not both")
        raw["data"] = data_file
    raw.update({k: v for k, v in kw.items() if v is not None})
    return raw, where


def _execute(spec: Any, opts: dict[str, Any]) -> dict[str, Any]:
    from gradprobe.lab import default_dir, plan, run_plan
    from gradprobe.lab.estimate import fmt_duration

    out = Path(opts["out"]) if opts["out"] else default_dir(spec)
    p = plan(spec, out)
    runs = len(p.todo) * len(spec.seeds)
    note = f" ({len(p.done)} already finished in {out})" if p.done else ""
    msg = f"{len(p.cells)} cells x {len(spec.seeds)} seeds{note}; to run: {runs} trainings"
    est = p.estimate_total(1 if opts["executor"] == "ray" else opts["workers"])
    say(err, f"gradprobe sweep: {msg}, estimated {fmt_duration(est)}")
    if est > LARGE_S:
        err.print("[yellow]a large sweep: results are written per cell; Ctrl-C keeps them[/]")
    with _bar(opts["quiet"] or opts["as_json"]) as bar:
        task = bar.add_task("cells", total=len(p.todo))
        summary = run_plan(
            p,
            out,
            executor=opts["executor"],
            workers=opts["workers"],
            address=opts["address"],
            on_cell=lambda r: bar.update(task, advance=1),
        )
    return summary


def _bar(disable: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("time left"),
        TimeRemainingColumn(),
        console=err,
        disable=disable,
    )


def _show(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(_dumps(summary))
        return
    from gradprobe.cli._output import console as make_console
    from gradprobe.cli._output import print_table

    console = make_console()
    if summary.get("ranking"):
        _show_ranking(summary["ranking"], console)
    else:
        t = Table(title="cells (median over seeds)", title_justify="left")
        for c in ("cell", "first/last ratio", "decay/layer", "test loss", "findings", "failed"):
            t.add_column(c, overflow="fold")
        for c in summary["cells_summary"]:
            t.add_row(
                c["label"].replace(" ", "\n"),
                _f(c["ratio_median"]),
                _f(c["decay_per_layer"]),
                _f(c["test_loss"]),
                (c["findings"] or "-").replace(",", "\n"),
                str(c["failed_seeds"]),
            )
        print_table(console, t)
    console.print(f"sweep directory: {summary['sweep_dir']}  report: {summary.get('report', '-')}")


def _show_ranking(ranking: list[dict[str, Any]], console: Console) -> None:
    """Rank, remedy and outcome on one line, the rank's reason below it, wrapped at words."""
    by_acc = any(r.get("test_accuracy") is not None for r in ranking)
    outcome = "test accuracy" if by_acc else "test loss"
    say(
        console,
        f"Remedies ranked by {outcome} after the same training (median over seeds), then by "
        "gradient health during training; a remedy that diverges is marked failed, ranked last.",
    )
    for r in ranking:
        failed = r["status"] == "failed"
        head = f"{r['rank']}. {r['remedy']}" + (" (failed)" if failed else "")
        say(console, head, indent=2, style="red" if failed else "bold")
        say(console, r["reason"], indent=6)


def _dumps(obj: Any) -> str:
    """JSON with NaN as null (strict JSON)."""
    import math

    def clean(o: Any) -> Any:
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    return json.dumps(clean(obj), default=str)


def _f(v: Any) -> str:
    return "-" if v is None else f"{v:.3g}"


def _finish(summary: dict[str, Any]) -> None:
    if summary["status"] == "interrupted":
        err.print(f"[yellow]interrupted: {summary['finished']} of {summary['cells']} cells kept[/]")
        sys.exit(130)
    if summary["status"] != "complete":
        err.print("[yellow]partial sweep: some cells failed (see the results table)[/]")


@click.command("sweep")
@click.argument("source", required=False, metavar="DATA|SPEC.toml")
@_axis_options
@click.option(
    "--remedy", help="Remedies (the names diagnose prints), comma-separated: one more axis."
)
@_common
def sweep_cmd(source: str | None, data_file: str | None, **kw: Any) -> None:
    """Sweep configurations x seeds on a built-in experiment, a scikit-learn dataset, a data file
    (--data FILE --target COL) or a TOML spec file; writes a sweep directory."""
    opts, spec = _options_and_spec(source, data_file, kw)
    summary = _execute(spec, opts)
    _show(summary, opts["as_json"])
    _finish(summary)


def _options_and_spec(
    source: str | None, data_file: str | None, kw: dict[str, Any]
) -> tuple[dict[str, Any], Any]:
    """Split the running options from the spec options, and parse the spec (with --data-home)."""
    import dataclasses

    from gradprobe.lab import parse

    opts = {k: kw.pop(k) for k in ("workers", "executor", "address", "out", "as_json", "quiet")}
    data_home = kw.pop("data_home")
    raw, where = _raw(source, data_file, **kw)
    spec = parse(raw, where)
    if data_home:
        spec = dataclasses.replace(spec, data=dataclasses.replace(spec.data, data_home=data_home))
    return opts, spec


@click.command("remedies")
@click.argument("source", required=False, metavar="DATA|SPEC.toml")
@click.option(
    "--only",
    help="Remedies to try, comma-separated (default: every one the lab can train; 'baseline' "
    "is the configuration unchanged).",
)
@_common
def remedies_cmd(source: str | None, data_file: str | None, only: str | None, **kw: Any) -> None:
    """Try the remedy catalogue (the names diagnose prints) on one configuration, with seeds and
    the same training budget; rank by outcome (test loss or accuracy, median over seeds), then
    gradient health during training; remedies that diverge are marked failed and ranked last."""
    from gradprobe.lab import remedy_spec

    opts, spec = _options_and_spec(source, data_file, kw)
    names = [n.strip() for n in only.split(",") if n.strip()] if only else None
    summary = _execute(remedy_spec(spec, names), opts)
    _show(summary, opts["as_json"])
    _finish(summary)
