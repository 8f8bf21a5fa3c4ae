"""Save monitors' records as a run directory (read by ``gradprobe.load_run``, ``gradprobe plot``).

A notebook or script that trains with :class:`~gradprobe.keras.GradientMonitor` gets the same
run directory as ``gradprobe run`` writes (see :mod:`gradprobe.run`), one variant per monitor.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from gradprobe.experiments.outcome import Recorder
from gradprobe.records import TABLES, write_table
from gradprobe.run import Run, load_run, variant_dir, write_json


def save_run(
    monitors: Recorder | Mapping[str, Recorder],
    path: str | Path,
    *,
    experiment: str = "keras",
    steps: Mapping[str, pd.DataFrame] | None = None,
    plots: bool = True,
) -> Run:
    """Write ``monitors`` (one, or a mapping variant name -> monitor) as a run directory.

    ``steps`` optionally maps a variant to a frame with ``step``, ``epoch`` and ``loss``
    columns (drawn as the loss chart). With ``plots``, the run's PNGs are written to
    ``path/plots``. Returns the loaded :class:`~gradprobe.run.Run`.
    """
    named = dict(monitors) if isinstance(monitors, Mapping) else {"model": monitors}
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    variants = [{"name": name, "note": "", "model": None} for name in named]
    write_json(
        root / "config.json",
        {"experiment": experiment, "framework": "keras", "variants": variants},
    )
    for name, mon in named.items():
        mon.flush()
        for table in TABLES:
            frame = mon.to_pandas(table)
            write_table(frame, root / "records" / variant_dir(name) / f"{table}-00000.parquet")
    if steps:
        frames = [f.assign(variant=name) for name, f in steps.items()]
        write_table(pd.concat(frames, ignore_index=True), root / "steps.parquet")
    write_json(root / "status.json", {"status": "complete", "message": ""})
    run = load_run(root)
    write_json(root / "summary.json", _summary(run))
    if plots:
        from gradprobe.views.plots import save_run_plots

        save_run_plots(run)
    return load_run(root)


def _summary(run: Run) -> dict[str, Any]:
    from gradprobe.experiments.runner import summarise

    return summarise(run)
