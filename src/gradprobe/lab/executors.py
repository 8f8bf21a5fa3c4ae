"""Where cells run: here, one after the other; on local worker processes; on a Ray cluster.

Each executor calls ``on_result(CellResult)`` in this process as each cell finishes, so the
caller writes it at once. A worker process that dies (killed, out of memory) costs only the cell
it was running: that cell is retried on a fresh worker up to ``attempts`` times, then recorded as
failed with the reason; the other cells go on.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

import pandas as pd

from gradprobe.errors import MissingExtraError
from gradprobe.experiments.data import Dataset
from gradprobe.lab.cell import CellResult, _row, run_cell
from gradprobe.lab.spec import Cell

OnResult = Callable[[CellResult], None]
Runner = Callable[[Cell, Dataset, bool], CellResult]
EXECUTORS = ("local", "ray")


def failed(cell: Cell, reason: str) -> CellResult:
    """Rows with status ``error`` for every seed of a cell that could not run."""
    import math

    rows = pd.DataFrame([_row(cell, s, "error", reason, None, math.nan) for s in cell.seeds])
    empty = pd.DataFrame()
    return CellResult(cell.key, rows, empty, empty, empty, "error")


def run_here(
    cells: Sequence[Cell], data: Dataset, batched: dict[str, bool], on_result: OnResult
) -> None:
    """One cell after the other in this process."""
    for cell in cells:
        on_result(run_cell(cell, data, batched[cell.key]))


def _worker(conn: Connection, data: Dataset, threads: int, runner: Runner) -> None:
    """A worker process: receive (cell, batched), send back the result, until told to stop."""
    import torch

    torch.set_num_threads(threads)
    while True:
        job = conn.recv()
        if job is None:
            return
        cell, batched = job
        conn.send(runner(cell, data, batched))


class _Worker:
    def __init__(self, ctx: Any, data: Dataset, threads: int, runner: Runner) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, data, threads, runner), daemon=True)
        self.proc.start()
        child.close()
        self.cell: Cell | None = None

    def stop(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.conn.send(None)
        self.proc.join(timeout=5 if self.cell is None else 0)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join()


def run_workers(
    cells: Sequence[Cell],
    data: Dataset,
    batched: dict[str, bool],
    on_result: OnResult,
    *,
    workers: int,
    attempts: int = 2,
    runner: Runner = run_cell,
) -> None:
    """Cells on ``workers`` local processes (spawned: safe with torch's threads)."""
    ctx = mp.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // workers)
    todo = list(cells)
    tries: dict[str, int] = {}
    pool = [_Worker(ctx, data, threads, runner) for _ in range(min(workers, len(todo)))]
    try:
        while todo or any(w.cell for w in pool):
            for w in pool:
                if w.cell is None and todo:
                    w.cell = todo.pop(0)
                    tries[w.cell.key] = tries.get(w.cell.key, 0) + 1
                    w.conn.send((w.cell, batched[w.cell.key]))
            busy = [w for w in pool if w.cell is not None]
            ready = wait([w.conn for w in busy] + [w.proc.sentinel for w in busy])
            for i, w in enumerate(pool):
                if w.cell is None or (w.conn not in ready and w.proc.sentinel not in ready):
                    continue
                cell, w.cell = w.cell, None
                result = _receive(w)
                if result is not None:
                    on_result(result)
                    continue
                reason = f"worker process died (exit code {w.proc.exitcode}) running the cell"
                if tries[cell.key] < attempts:
                    todo.insert(0, cell)
                else:
                    on_result(failed(cell, f"{reason}; tried {tries[cell.key]} times"))
                pool[i] = _Worker(ctx, data, threads, runner)
    finally:
        for w in pool:
            w.stop()


def _receive(w: _Worker) -> CellResult | None:
    """The worker's result, or None if it died (its process is then reaped)."""
    try:
        if w.conn.poll():
            return w.conn.recv()
    except (EOFError, OSError):
        pass
    w.proc.join(timeout=5)
    return None


def run_ray(
    cells: Sequence[Cell],
    data: Dataset,
    batched: dict[str, bool],
    on_result: OnResult,
    *,
    address: str | None = None,
    attempts: int = 2,
) -> None:
    """Cells as Ray tasks (one CPU each) on the cluster at ``address`` (or a local one)."""
    try:
        import ray
    except ImportError as exc:
        raise MissingExtraError("ray", "ray", "--executor ray") from exc
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, include_dashboard=False)
    task = ray.remote(num_cpus=1, max_retries=attempts - 1)(_ray_cell)
    data_ref = ray.put(data)
    pending = {task.remote(c, data_ref, batched[c.key]): c for c in cells}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                cell = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:  # a task error or a lost worker
                    result = failed(cell, f"ray: {type(exc).__name__}: {str(exc)[:200]}")
                on_result(result)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


def _ray_cell(cell: Cell, data: Dataset, batched: bool) -> CellResult:
    import torch

    torch.set_num_threads(1)
    return run_cell(cell, data, batched)
