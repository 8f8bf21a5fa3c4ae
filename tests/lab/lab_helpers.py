"""Cell runners that kill their worker process, for the executor tests (importable by spawn)."""

from __future__ import annotations

import os
from pathlib import Path

from gradprobe.lab.cell import run_cell


def crash_once(cell, data, batched):  # type: ignore[no-untyped-def]
    """Kill the worker the first time it runs a depth-4 cell."""
    marker = Path(os.environ["LAB_CRASH_DIR"]) / cell.key
    if "depth=4" in cell.label and not marker.exists():
        marker.touch()
        os._exit(9)
    return run_cell(cell, data, batched)


def crash_always(cell, data, batched):  # type: ignore[no-untyped-def]
    """Kill the worker every time it runs a depth-4 cell."""
    if "depth=4" in cell.label:
        os._exit(9)
    return run_cell(cell, data, batched)
