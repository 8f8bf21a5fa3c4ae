"""Run a sweep: load and check the data, expand the cells, skip finished ones, run the rest,
write each as it finishes, then the results table, the summary, the plots and the report."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from gradprobe.errors import UnknownChoiceError, UsageError
from gradprobe.experiments.data import Dataset, outputs
from gradprobe.lab import estimate, executors, store
from gradprobe.lab.cell import CellResult, load_data
from gradprobe.lab.remedies import null_loss, rank_remedies, remedy_cells
from gradprobe.lab.spec import Cell, SweepSpec, base, check_cells, expand


@dataclass
class Plan:
    """A sweep ready to run: its data, cells, which train batched, and the time estimate."""

    spec: SweepSpec
    data: Dataset
    cells: list[Cell]
    batched: dict[str, bool]
    todo: list[Cell]
    done: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def estimate_s(self) -> float:
        """Estimated seconds of training the cells still to run, one after the other."""
        return sum(self.cell_seconds())

    def cell_seconds(self) -> list[float]:
        n, f, t = self.data.n_features, len(self.data.x_train), len(self.data.x_test)
        return [estimate.seconds(c, n, f, self.batched[c.key], t) for c in self.todo]

    def estimate_total(self, workers: int = 1) -> float:
        """Estimated wall time of the whole command with ``workers`` local processes."""
        return estimate.total(self.cell_seconds(), len(self.cells), workers)


def default_dir(spec: SweepSpec, root: str | Path = "sweeps") -> Path:
    """The same spec always maps to the same folder, so running it again resumes it."""
    digest = hashlib.sha1(json.dumps(spec.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
    return Path(root) / f"{spec.data.label.replace('.', '_')}-{digest}"


def plan(spec: SweepSpec, out_dir: Path) -> Plan:
    """Everything that can fail before training: data, cells, combinations; finished cells."""
    data = load_data(spec.data)
    model, train = base(spec, data.task, outputs(data))
    if spec.remedies:
        ident, n_train = spec.data.identity(), len(data.x_train)
        cells = remedy_cells(spec, model, train, ident, list(spec.remedies), n_train)
    else:
        cells = expand(spec, model, train, spec.data.identity(), len(data.x_train))
    check_cells(cells, len(data.x_train))
    n, f = data.n_features, len(data.x_train)
    batched = {c.key: estimate.choose_batched(c, n, f, spec.batched) for c in cells}
    done = {c.key: r for c in cells if (r := store.finished(out_dir, c.key)) is not None}
    return Plan(spec, data, cells, batched, [c for c in cells if c.key not in done], done)


def run(
    p: Plan,
    out_dir: Path,
    *,
    executor: str = "local",
    workers: int = 1,
    address: str | None = None,
    on_cell: Callable[[CellResult], None] | None = None,
) -> dict[str, Any]:
    """Run the plan's remaining cells, writing each as it finishes; returns the summary."""
    if executor not in executors.EXECUTORS:
        raise UnknownChoiceError("executor", executor, executors.EXECUTORS)
    if workers < 1:
        raise UsageError(f"--workers must be a whole number >= 1, got {workers}")
    out_dir.mkdir(parents=True, exist_ok=True)
    store.write_json(out_dir / "sweep.json", _manifest(p))
    store.write_json(out_dir / "status.json", {"status": "running"})
    rows = dict(p.done)
    t0 = time.perf_counter()

    def finish(result: CellResult) -> None:
        store.write_cell(out_dir, result)
        rows[result.key] = result.rows
        if on_cell is not None:
            on_cell(result)

    status = "complete"
    try:
        if executor == "ray":
            executors.run_ray(p.todo, p.data, p.batched, finish, address=address)
        elif workers > 1:
            executors.run_workers(p.todo, p.data, p.batched, finish, workers=workers)
        else:
            executors.run_here(p.todo, p.data, p.batched, finish)
    except KeyboardInterrupt:
        status = "interrupted"
    return finalise(p, out_dir, rows, status, time.perf_counter() - t0)


def _manifest(p: Plan) -> dict[str, Any]:
    return {
        "spec": p.spec.to_dict(),
        "task": p.data.task,
        "cells": [
            {"key": c.key, "label": c.label, "values": dict(c.values), "batched": p.batched[c.key]}
            for c in p.cells
        ],
    }


def finalise(
    p: Plan, out_dir: Path, rows: dict[str, pd.DataFrame], status: str, wall: float
) -> dict[str, Any]:
    """Write results.parquet (the cells of this spec, in order), status and summary."""
    frames = [rows[c.key] for c in p.cells if c.key in rows]
    results = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if len(results):
        store.write_table(results, out_dir / "results.parquet")
    n_failed = int((results["status"] == "error").sum()) if len(results) else 0
    if status == "complete" and (len(frames) < len(p.cells) or n_failed):
        status = "partial"
    counts = {"cells": len(p.cells), "finished": len(frames), "skipped": len(p.done)}
    store.write_json(out_dir / "status.json", {"status": status, **counts})
    summary = summarise(results, p, out_dir, status, counts, wall)
    ranking = None
    if p.spec.remedies and len(results):
        null = null_loss(p.cells[0].train.loss, p.data.y_train, p.data.y_test)
        ranking = rank_remedies(results, p.data.task, null)
        summary["null_loss"] = null
    if ranking is not None:
        summary["ranking"] = ranking.astype(object).where(ranking.notna(), None).to_dict("records")
    if len(results):
        from gradprobe.lab import report  # matplotlib only once there is something to draw
        from gradprobe.lab.plots import save_plots

        summary["plots"] = [str(x) for x in save_plots(out_dir, results, ranking)]
        summary["report"] = str(report.write(out_dir, summary, results, ranking))
    store.write_json(out_dir / "summary.json", summary)
    return summary


def summarise(
    results: pd.DataFrame,
    p: Plan,
    out_dir: Path,
    status: str,
    counts: dict[str, int],
    wall: float,
) -> dict[str, Any]:
    """The ``--json`` object: status, counts, and per cell the mean and spread over seeds."""
    return {
        "sweep_dir": str(out_dir),
        "status": status,
        "data": p.spec.data.label,
        "task": p.data.task,
        **counts,
        "seeds": list(p.spec.seeds),
        "wall_time_s": wall,
        "cells_summary": cell_summary(results).to_dict(orient="records") if len(results) else [],
    }


def cell_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per cell: median first/last ratio and its range over seeds, mean test loss/accuracy,
    the findings seen in most seeds, failed seeds."""
    ok = results[results["status"] != "error"]
    g = ok.groupby("cell", sort=False)
    out = pd.DataFrame(
        {
            "label": g["label"].first(),
            "ratio_median": g["first_last_ratio"].median(),
            "ratio_min": g["first_last_ratio"].min(),
            "ratio_max": g["first_last_ratio"].max(),
            "decay_per_layer": g["decay_per_layer"].median(),
            "test_loss": g["test_loss"].mean(),
            "test_accuracy": g["test_accuracy"].mean(),
            "errors_per_seed": g["n_errors"].mean(),
            "findings": g["findings"].agg(_common),
            "seeds": g["seed"].count(),
        }
    ).reset_index()
    failed = results[results["status"] == "error"].groupby("cell")["seed"].count()
    out["failed_seeds"] = out["cell"].map(failed).fillna(0).astype(int)
    return out.astype(object).where(out.notna(), None)


def _common(values: pd.Series) -> str:
    """Findings present in at least half the seeds."""
    counts: dict[str, int] = {}
    for v in values:
        for item in filter(None, str(v).split(",")):
            counts[item] = counts.get(item, 0) + 1
    return ",".join(k for k, n in counts.items() if n * 2 >= len(values))
