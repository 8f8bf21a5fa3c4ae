"""A run directory: what ``gradprobe run`` writes and everything after it reads.

Layout (all tables are Parquet; pandas reads them)::

    RUN_DIR/
      config.json          the resolved configuration (gradprobe.experiments.spec.RunConfig)
      status.json          {"status": "running" | "complete" | "partial", "message": ...}
      summary.json         the object ``gradprobe run --json`` prints
      records/<variant>/params-NNNNN.parquet   gradient records (gradprobe.records)
      records/<variant>/layers-NNNNN.parquet   activation and backward-signal records
      steps.parquet        variant, step, epoch, loss
      epochs.parquet       variant, epoch, steps, train/test loss and accuracy
      firstlayer.parquet   variant, step, true first-layer gradient and the notebook's estimate
      plots/*.png

A live :class:`~gradprobe.torch.Monitor` and a saved run load into the same tables, so analysis
and views take either.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from gradprobe.errors import NoRunDirError, RunDirError
from gradprobe.records import TABLES, concat_tables

EXTRA_TABLES = ("steps", "epochs", "firstlayer")


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (a reader never sees half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_jsonable) + "\n")
    os.replace(tmp, path)


def _jsonable(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _read_json(path: Path, required: bool = True) -> dict[str, Any]:
    if not path.exists():
        if required:
            raise RunDirError(
                f"{path}: missing; a run directory has config.json written by 'gradprobe run'"
            )
        return {}
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{path}: not valid JSON ({exc}); the file is corrupt") from None
    if not isinstance(obj, dict):
        raise RunDirError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise RunDirError(
            f"{path}: cannot be read as Parquet ({type(exc).__name__}: {str(exc)[:120]}); "
            "the file is corrupt -- delete it to load the rest of the run"
        ) from None


@dataclass
class Run:
    """A loaded run directory (or a run being written)."""

    path: Path
    config: dict[str, Any]
    status: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def partial(self) -> bool:
        return self.status.get("status") != "complete"

    @property
    def variants(self) -> list[str]:
        names = [v["name"] for v in self.config.get("variants", [])]
        seen = set(self.table("params")["variant"]) if "variant" in self.table("params") else set()
        return [n for n in names if n in seen] or sorted(seen)

    def table(self, name: str) -> pd.DataFrame:
        """One of ``params``, ``layers``, ``steps``, ``epochs``, ``firstlayer``."""
        if name not in self.tables:
            raise RunDirError(f"unknown table {name!r}: expected one of {', '.join(self.tables)}")
        return self.tables[name]

    def to_pandas(self, table: str = "params") -> pd.DataFrame:
        return self.table(table)

    def _repr_html_(self) -> str:
        """A compact summary and the findings, for notebooks."""
        from gradprobe.views.notebook import summary_html

        return summary_html(self)

    def plot(self) -> list[Any]:
        """The per-layer charts as matplotlib figures."""
        from gradprobe.views.notebook import plot

        return plot(self)


def load_run(path: str | Path) -> Run:
    """Load a run directory written by ``gradprobe run`` (complete, partial or interrupted)."""
    root = Path(path)
    if not root.is_dir():
        raise NoRunDirError(
            f"{root}: no such run directory (expected a folder made by 'gradprobe run')"
        )
    config = _read_json(root / "config.json")
    status = _read_json(root / "status.json", required=False) or {
        "status": "partial",
        "message": "status.json is missing: the run did not finish",
    }
    summary = _read_json(root / "summary.json", required=False)
    tables: dict[str, pd.DataFrame] = {}
    for name in TABLES:
        frames = []
        for part in sorted((root / "records").glob(f"*/{name}-*.parquet")):
            f = _read_parquet(part)
            f["variant"] = _variant_of(part, config)
            frames.append(f)
        t = concat_tables(frames, name)
        if "variant" not in t:
            t["variant"] = pd.Series([], dtype=object)
        tables[name] = t
    for name in EXTRA_TABLES:
        p = root / f"{name}.parquet"
        tables[name] = _read_parquet(p) if p.exists() else pd.DataFrame({"variant": []})
    return Run(root, config, status, summary, tables)


def variant_dir(name: str) -> str:
    """A file-system-safe folder name for a variant."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _variant_of(part: Path, config: dict[str, Any]) -> str:
    folder = part.parent.name
    for v in config.get("variants", []):
        if variant_dir(v["name"]) == folder:
            return str(v["name"])
    return folder
