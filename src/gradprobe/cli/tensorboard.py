"""``gradprobe tensorboard``: a saved run or a monitor's log_dir as TensorBoard event files."""

from __future__ import annotations

from pathlib import Path

import click

from gradprobe.errors import DataError, UsageError
from gradprobe.run import load_run


@click.command("tensorboard")
@click.argument("run_dir", type=click.Path())
@click.argument("out_dir", type=click.Path())
def tensorboard_cmd(run_dir: str, out_dir: str) -> None:
    """Write RUN_DIR's records (a run directory or a monitor's log_dir) as TensorBoard event
    files in OUT_DIR: one TensorBoard run per variant (and per rank), then
    'tensorboard --logdir OUT_DIR'."""
    from gradprobe.tensorboard import convert_run

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: OUT_DIR must be a folder, got a file; choose another path")
    run = load_run(run_dir)
    if run.table("params").empty and run.table("layers").empty:
        raise DataError(f"{run_dir}: the run recorded no rows yet; nothing to write")
    for path in convert_run(run, out):
        click.echo(str(path))
