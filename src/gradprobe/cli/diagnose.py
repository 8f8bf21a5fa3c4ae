"""``gradprobe diagnose``, ``report`` and ``check``: the verdict from the shell."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from gradprobe.cli._output import console as make_console
from gradprobe.cli._output import num, print_table, say
from gradprobe.diagnosis import Finding, diagnose, verdict
from gradprobe.errors import RunDirError
from gradprobe.experiments.init import INITS
from gradprobe.experiments.spec import ACTIVATIONS, resolve
from gradprobe.run import Run, load_run

STYLE = {"error": "bold red", "warning": "yellow", "info": "dim", "ok": "green"}


def _worst(findings: Sequence[Finding]) -> str:
    return min(findings, key=lambda f: f.rank).severity if findings else "ok"


def print_verdicts(findings: Sequence[Finding], variants: Sequence[str], console: Console) -> None:
    """One verdict line per variant, coloured by severity (the end of ``gradprobe run``)."""
    for name in variants:
        mine = [f for f in findings if f.variant == name]
        line = Text(f"{name or 'model'}: ", style="bold")
        line.append(verdict(mine), style=STYLE[_worst(mine)])
        say(console, line)


def print_findings(findings: Sequence[Finding], variants: Sequence[str], console: Console) -> None:
    """The verdict of each variant, then each finding: summary, why, remedies."""
    for name in variants:
        mine = [f for f in findings if f.variant == name]
        print_verdicts(mine, [name], console)
        for f in mine:
            head = Text(f"[{f.severity}] ", style=STYLE[f.severity])
            head.append(f"{f.code}: ", style="bold")
            head.append(f.summary)
            say(console, head, indent=2, hanging=4)
            if f.where:
                say(console, f"where: {f.where}", indent=4)
            say(console, f.explanation, indent=4, style="dim")
            for i, r in enumerate(f.remedies[:3], 1):
                say(console, f"{i}. {r.name.replace('_', ' ')}: {r.why}", indent=4, hanging=7)
        console.print()


def print_notes(run: Run) -> None:
    """The run's notes (partial run, variants with no records) on stderr, one line each."""
    err = make_console(stderr=True)
    for note in run.notes:
        say(err, note, style="yellow")


_partial_note = print_notes  # the old name, kept for callers


def _variants_of(run: Run) -> list[str]:
    return run.variants or [""]


@click.command("diagnose")
@click.argument("run_dir", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def diagnose_cmd(run_dir: str, as_json: bool) -> None:
    """Diagnose a run directory: verdict, findings, evidence and remedies per variant."""
    run = load_run(run_dir)
    if run.table("params").empty and run.table("layers").empty:
        raise RunDirError(
            f"{run_dir}: no records (no params-*.parquet under records/): nothing to diagnose; "
            "expected a run that recorded at least one step"
        )
    findings = diagnose(run)
    if as_json:
        click.echo(json.dumps(diagnosis_json(run, findings), allow_nan=False))
    else:
        print_findings(findings, _variants_of(run), make_console())
    print_notes(run)


def diagnosis_json(run: Run, findings: Sequence[Finding]) -> dict[str, Any]:
    """What ``gradprobe diagnose --json`` prints."""
    return {
        "run_dir": str(run.path),
        "status": run.status.get("status"),
        "partial": run.partial,
        "missing_variants": run.missing_variants,
        "notes": run.notes,
        "variants": [
            {
                "name": name,
                "verdict": verdict([f for f in findings if f.variant == name]),
                "findings": [f.to_dict() for f in findings if f.variant == name],
            }
            for name in run.variants
        ],
    }


@click.command("report")
@click.argument("run_dir", type=click.Path())
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="HTML file to write (default RUN_DIR/report.html).",
)
def report_cmd(run_dir: str, output: str | None) -> None:
    """Write one self-contained HTML report of a run directory and print its path."""
    from gradprobe.report import write_report

    run = load_run(run_dir)
    click.echo(str(write_report(run, output)))
    print_notes(run)


def _model_options(f: Any) -> Any:
    opts = [
        click.option("--variant", help="Variant(s), comma-separated (default: all)."),
        click.option("--activation", help=f"Activation(s): {', '.join(ACTIVATIONS)}."),
        click.option("--depth", type=int, help="Hidden layers."),
        click.option("--width", type=int, help="Units per hidden layer."),
        click.option("--init", help=f"Initialisation: {', '.join(INITS)}."),
        click.option("--batch-size", type=int, help="Rows in the checked batch (0: all)."),
        click.option("--rows", type=int, help="Training rows used (0: all)."),
        click.option("--seed", type=int, help="Random seed of the weights."),
        click.option(
            "--data-home",
            type=click.Path(file_okay=False),
            help="scikit-learn data folder holding the California Housing cache.",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _fmt(v: float) -> str:
    return num(v, 3)


@click.command("check")
@click.argument("experiment", metavar="EXPERIMENT")
@_model_options
def check_cmd(experiment: str, as_json: bool, **kw: Any) -> None:
    """Will it train? One forward/backward of each variant at initialisation, diagnosed."""
    from gradprobe.experiments.runner import load_dataset

    config = resolve(experiment, **kw)
    data = load_dataset(config)
    results = {v.name: _check_variant(v, config, data) for v in config.variants}
    if as_json:
        out = {
            "experiment": experiment,
            "variants": [
                {
                    "name": n,
                    "loss": r.loss,
                    "verdict": r.verdict,
                    "table": [
                        {"layer_number": int(row["depth"]) + 1, **row}
                        for row in json.loads(r.table.to_json(orient="records"))
                    ],
                    "findings": [f.to_dict() for f in r.findings],
                }
                for n, r in results.items()
            ],
        }
        click.echo(json.dumps(out))
        return
    console = make_console()
    for name, r in results.items():
        print_table(console, _check_table(f"{experiment} / {name}: one step at initialisation", r))
        print_findings([replace_variant(f, name) for f in r.findings], [name], console)


def replace_variant(f: Finding, name: str) -> Finding:
    import dataclasses

    return dataclasses.replace(f, variant=name)


def _check_variant(variant: Any, config: Any, data: Any) -> Any:
    import torch
    import torch.nn.functional as F

    from gradprobe.experiments.torch_backend import build_mlp
    from gradprobe.torch.check import check

    rows = config.train.rows or len(data.x_train)
    batch = min(config.train.batch_size or rows, rows)
    x = torch.from_numpy(data.x_train[:batch])
    y = torch.from_numpy(data.y_train[:batch])
    model = build_mlp(variant.model, data.n_features, config.train.seed)
    if config.train.loss == "mse":
        return check(model, x, y, F.mse_loss)
    return check(model, x, y, lambda out, t: F.binary_cross_entropy(out.clamp(1e-7, 1 - 1e-7), t))


def _check_table(title: str, r: Any) -> Table:
    t = Table(title=Text(title), title_justify="left")
    t.add_column("layer", justify="right")
    t.add_column("module", justify="left")
    for col in ("||dL/dW||", "per-example", "||dL/dh||", "act RMS", "saturated", "dead"):
        t.add_column(col, justify="right")
    n = len(r.table)
    for i, row in enumerate(r.table.itertuples()):
        end = " (input)" if i == 0 else " (output)" if i == n - 1 else ""
        t.add_row(
            f"{int(row.depth) + 1}{end}",
            Text(str(row.layer)),
            _fmt(row.grad_norm),
            _fmt(row.pe_grad_rms),
            _fmt(row.backward_norm),
            _fmt(row.act_rms),
            _fmt(row.saturated_frac),
            _fmt(row.dead_frac),
        )
    return t
