"""A sweep directory, written cell by cell so that nothing finished is ever lost.

Layout (tables are Parquet; pandas reads them)::

    SWEEP_DIR/
      sweep.json            the validated spec and its cells (key, label, swept values)
      status.json           {"status": running | complete | partial | interrupted, counts}
      cells/<key>/rows.parquet     one row per seed (written last: the cell is finished)
      cells/<key>/steps.parquet    seed, step, epoch, loss (loss curves)
      cells/<key>/params.parquet   gradient records with a seed column (gradprobe.records)
      cells/<key>/layers.parquet   activation and backward-signal records
      results.parquet       the rows of every finished cell of the spec (one per cell and seed)
      summary.json          what ``gradprobe sweep --json`` prints
      plots/*.png, report.html
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gradprobe.errors import RunDirError
from gradprobe.lab.cell import CellResult
from gradprobe.records import write_table
from gradprobe.run import write_json

__all__ = ["finished", "load_results", "write_cell", "write_json"]


def cell_dir(root: Path, key: str) -> Path:
    return root / "cells" / key


def write_cell(root: Path, result: CellResult) -> None:
    """Write one cell's tables; ``rows.parquet`` goes last and marks the cell finished."""
    d = cell_dir(root, result.key)
    for name in ("steps", "params", "layers"):
        frame = getattr(result, name)
        if len(frame):
            write_table(frame, d / f"{name}.parquet")
    write_table(result.rows, d / "rows.parquet")


def finished(root: Path, key: str) -> pd.DataFrame | None:
    """The rows of a finished cell, or None (never run, or failed with an error: run again)."""
    p = cell_dir(root, key) / "rows.parquet"
    if not p.exists():
        return None
    try:
        rows = pd.read_parquet(p)
    except Exception:  # a corrupt file: the cell runs again
        return None
    return None if (rows["status"] == "error").any() else rows


def cell_table(root: Path, key: str, name: str) -> pd.DataFrame:
    """``steps``, ``params`` or ``layers`` of one cell (empty if it recorded none)."""
    p = cell_dir(root, key) / f"{name}.parquet"
    return pd.read_parquet(p) if p.exists() else pd.DataFrame()


def load_results(root: str | Path) -> pd.DataFrame:
    """The results table of a sweep directory (complete or partial)."""
    root = Path(root)
    p = root / "results.parquet"
    if p.exists():
        return pd.read_parquet(p)
    parts = sorted((root / "cells").glob("*/rows.parquet"))
    if not parts and not (root / "sweep.json").exists():
        raise RunDirError(f"{root}: not a sweep directory (no sweep.json, no cells/)")
    return (
        pd.concat([pd.read_parquet(x) for x in parts], ignore_index=True)
        if parts
        else (pd.DataFrame())
    )
