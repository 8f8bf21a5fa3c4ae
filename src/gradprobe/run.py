"""A run directory: what ``gradprobe run`` writes and everything after it reads.

Layout (all tables are Parquet; pandas reads them)::

    RUN_DIR/
      config.json          the resolved configuration (gradprobe.experiments.spec.RunConfig)
      status.json          {"status": "running" | "complete" | "partial", "message": ...}
      summary.json         the object ``gradprobe run --json`` prints
      records/<variant>/params-*.parquet   gradient records (gradprobe.records)
      records/<variant>/layers-*.parquet   activation and backward-signal records
      steps.parquet        variant, step, epoch, loss
      epochs.parquet       variant, epoch, steps, train/test loss and accuracy
      firstlayer.parquet   variant, step, true first-layer gradient and the notebook's estimate
      plots/*.png

A monitor's ``log_dir`` (``params-*.parquet`` and ``layers-*.parquet``, see
:mod:`gradprobe.storage`) loads too: without config, status or steps tables (empty ones), one
variant ``model``, or one per rank (``rank0``, ``rank1``, ...) when several processes wrote it.

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
        reason = " ".join(str(exc).split()) or "no reason given"  # one whole line, never cut
        raise RunDirError(
            f"{path}: cannot be read as Parquet ({type(exc).__name__}: {reason}); "
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
    kind: str = "run"  # "run": written by 'gradprobe run' / save_run; "log_dir": a monitor's

    @property
    def partial(self) -> bool:
        return self.kind == "run" and self.status.get("status") != "complete"

    @property
    def missing_variants(self) -> list[str]:
        """Variants the config names that have no records (a deleted or unwritten part)."""
        if self.kind != "run":
            return []
        params, layers = self.table("params"), self.table("layers")
        seen = set(params["variant"]) | set(layers["variant"])
        return [v["name"] for v in self.config.get("variants", []) if v["name"] not in seen]

    @property
    def notes(self) -> list[str]:
        """One line per thing a reader must know before trusting what is shown: a partial run,
        a variant with no records. ``plot``, ``report`` and ``diagnose`` print the same lines."""
        out = []
        if self.partial:
            msg = self.status.get("message") or "the run did not finish"
            out.append(f"note: partial run ({msg}); showing what was recorded")
        for name in self.missing_variants:
            out.append(
                f"note: variant {name!r} has no records in {self.path / 'records'} "
                "(deleted, corrupt or never written); showing the other variants"
            )
        return out

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
    """Load a run directory written by ``gradprobe run`` (complete, partial or interrupted), or
    the ``log_dir`` of a monitor."""
    root = Path(path)
    if not root.is_dir():
        raise NoRunDirError(
            f"{root}: no such run directory (expected a folder made by 'gradprobe run' "
            "or a monitor's log_dir)"
        )
    if not (root / "config.json").exists() and _is_log_dir(root):
        return _load_log_dir(root)
    if not (root / "config.json").exists() and not (root / "records").is_dir():
        raise NoRunDirError(
            f"{root}: not a run directory: expected config.json (written by 'gradprobe run') "
            "or params-*.parquet records (a monitor's log_dir), found neither"
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
        tables[name] = _with_variant(concat_tables(frames, name))
    tables |= _extra_tables(root)
    return Run(root, config, status, summary, tables)


def _is_log_dir(root: Path) -> bool:
    return any(next(root.glob(f"{name}-*.parquet"), None) for name in TABLES)


def _load_log_dir(root: Path) -> Run:
    """A monitor's log_dir: the records of every rank; one variant per rank when several."""
    tables = {}
    for name in TABLES:
        frames = [_read_parquet(part) for part in sorted(root.glob(f"{name}-*.parquet"))]
        tables[name] = concat_tables(frames, name)
    ranks = sorted(set(tables["params"]["rank"]) | set(tables["layers"]["rank"]))
    for name in TABLES:
        t = tables[name]
        t["variant"] = "model" if len(ranks) <= 1 else "rank" + t["rank"].astype(str)
        tables[name] = _with_variant(t)
    tables |= _extra_tables(root)
    status = {"status": "log_dir", "message": "records of a monitor's log_dir"}
    return Run(root, {}, status, {}, tables, kind="log_dir")


def _with_variant(t: pd.DataFrame) -> pd.DataFrame:
    if "variant" not in t:
        t["variant"] = pd.Series([], dtype=object)
    return t


def _extra_tables(root: Path) -> dict[str, pd.DataFrame]:
    out = {}
    for name in EXTRA_TABLES:
        p = root / f"{name}.parquet"
        out[name] = _read_parquet(p) if p.exists() else pd.DataFrame({"variant": []})
    return out


def variant_dir(name: str) -> str:
    """A file-system-safe folder name for a variant."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _variant_of(part: Path, config: dict[str, Any]) -> str:
    folder = part.parent.name
    for v in config.get("variants", []):
        if variant_dir(v["name"]) == folder:
            return str(v["name"])
    return folder
