"""gradprobe lab: sweeps over remedies, depths and seeds; batched seeds; user data; Ray.

Example::

    >>> from pathlib import Path
    >>> from gradprobe.lab import parse, plan, run_plan
    >>> spec = parse({"data": "classification", "activation": "sigmoid,relu", "seeds": 4})
    >>> p = plan(spec, Path("sweeps/demo"))                     # doctest: +SKIP
    >>> summary = run_plan(p, Path("sweeps/demo"), workers=2)   # doctest: +SKIP
    >>> load_results("sweeps/demo").columns[:3].tolist()        # doctest: +SKIP
    ['cell', 'label', 'activation']
"""

from __future__ import annotations

from gradprobe.lab.cell import CellResult, run_cell
from gradprobe.lab.remedies import REMEDIES, rank_remedies, remedy_spec
from gradprobe.lab.spec import KEYS, Cell, DataSpec, SweepSpec, expand, load_toml, parse
from gradprobe.lab.store import load_results
from gradprobe.lab.sweep import Plan, default_dir, plan
from gradprobe.lab.sweep import run as run_plan

__all__ = [
    "KEYS",
    "REMEDIES",
    "Cell",
    "CellResult",
    "DataSpec",
    "Plan",
    "SweepSpec",
    "default_dir",
    "expand",
    "load_results",
    "load_toml",
    "parse",
    "plan",
    "rank_remedies",
    "remedy_spec",
    "run_cell",
    "run_plan",
]
