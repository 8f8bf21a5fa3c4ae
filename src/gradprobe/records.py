"""The records: the one contract between capture and everything after it.

Capture (the torch monitor, the Keras callback) produces two tidy long tables; analysis, plots, the
report and the CLI read nothing else. Neither table needs torch or TensorFlow.

``params`` -- one row per recorded step and parameter tensor:

=================  =========================================================================
step               optimizer step (0-based) at which the gradient was read
layer              module path of the layer that owns the parameter (``"(root)"`` for the model)
param              parameter name inside that layer (``weight``, ``bias``, ...)
depth              0-based position of the layer in the forward pass, input to output
numel              number of elements of the parameter
grad_norm          ||g||_2
grad_rms           ||g||_2 / sqrt(numel)
grad_mean          mean(g)
grad_std           population standard deviation of g
grad_max_abs       max |g|
grad_zero_frac     fraction of elements of g exactly equal to 0
grad_nonfinite     number of NaN or infinite elements of g
weight_norm        ||W||_2 before the update
update_norm        ||W_after - W_before||_2 (NaN when no optimizer step was seen)
update_ratio       update_norm / weight_norm
pe_grad_rms        RMS over the batch of per-example weight-gradient norms ||delta_b||*||x_b||
                   (Linear weights, when per-example capture is on; NaN otherwise)
tier               what the step recorded: ``"gradients"`` (parameter gradients and updates
                   only: the step has no ``layers`` rows) or ``"all"`` (also the layer
                   statistics the monitor was set to record)
rank               the process that recorded the row (0 without torch.distributed)
skipped            True when the optimizer skipped the step (a GradScaler found inf/NaN)
=================  =========================================================================

``layers`` -- one row per recorded step and layer that owns parameters:

=================  =========================================================================
step, layer, depth as above
kind               the layer's type (``Linear``, ``Conv2d``, ``Dense``, ...)
activation         the nonlinearity applied to the layer's output ('' if none was seen)
act_mean           mean of the activation output (of the layer output when there is none)
act_std            its standard deviation
act_rms            its root mean square
saturated_frac     sigmoid/tanh: fraction of elements whose derivative is under 1% of its
                   maximum; NaN for other activations
dead_frac          ReLU family: fraction of units with no positive output for any example of
                   the batch; NaN for other activations
backward_norm      ||dL/dh||_F, the backward signal at the layer's output h (whole batch)
tier, rank,        as above (``tier`` is ``"all"`` on every ``layers`` row)
skipped
=================  =========================================================================

``tier``, ``rank`` and ``skipped`` came later than the other columns: :func:`conform` gives rows
that lack them (records saved before) ``tier="all"``, rank 0 and ``skipped=False``.

Which steps carry which statistics: under the default overhead budget (see
:mod:`gradprobe.budget`) most steps record the gradients only, and a share of them everything;
``every=N`` records everything on every N-th step. So the ``layers`` table may have fewer steps
than ``params``: select steps by ``tier`` (or by the steps present in each table), never by
position.

Memory: a :class:`RecordBuffer` holds at most ``max_rows`` rows (100 to 140 bytes each); beyond
that it writes them to a Parquet part -- in its ``folder`` when it has one, else in a private
temporary folder that :meth:`RecordBuffer.to_pandas` reads back and that is removed when the
buffer is garbage collected or the interpreter exits. :class:`gradprobe.storage.Storage` owns
the two buffers of a monitor.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gradprobe._interrupts import held_interrupts

PARAM_KEYS = ("step", "layer", "param", "depth", "numel")
PARAM_STATS = (
    "grad_norm",
    "grad_rms",
    "grad_mean",
    "grad_std",
    "grad_max_abs",
    "grad_zero_frac",
    "grad_nonfinite",
    "weight_norm",
    "update_norm",
    "update_ratio",
    "pe_grad_rms",
)
PARAM_COLUMNS = PARAM_KEYS + PARAM_STATS

LAYER_KEYS = ("step", "layer", "depth", "kind", "activation")
LAYER_STATS = (
    "act_mean",
    "act_std",
    "act_rms",
    "saturated_frac",
    "dead_frac",
    "backward_norm",
)
LAYER_COLUMNS = LAYER_KEYS + LAYER_STATS
ROW_FLAGS = ("tier", "rank", "skipped")  # in both tables; filled with defaults when absent
_FLAG_DEFAULTS: dict[str, object] = {"tier": "all", "rank": 0, "skipped": False}
TIERS = ("gradients", "all")  # values of the tier column (gradprobe.budget.Tier names)

TABLES = {"params": PARAM_COLUMNS + ROW_FLAGS, "layers": LAYER_COLUMNS + ROW_FLAGS}
_INT_COLUMNS = {"step", "depth", "numel", "rank"}
_ROW_GROUP = 16_384  # rows per Parquet row group: the writer holds one encoded group at a time
_STR_COLUMNS = {"layer", "param", "kind", "activation", "variant", "tier"}


def empty_frame(table: str) -> pd.DataFrame:
    """An empty frame with the columns and dtypes of ``table`` (``params`` or ``layers``)."""
    return conform(pd.DataFrame({c: [] for c in TABLES[table]}), table)


def conform(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """Order the columns of ``table`` first and give them their dtypes; extra columns are kept."""
    columns = TABLES[table]
    frame = frame.assign(**{c: v for c, v in _FLAG_DEFAULTS.items() if c not in frame.columns})
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{table} records lack columns {missing}; got {list(frame.columns)}")
    extra = [c for c in frame.columns if c not in columns]
    out = frame[list(columns) + extra].copy()
    for c, default in _FLAG_DEFAULTS.items():
        if out[c].isna().any():  # rows concatenated from records that predate the column
            out[c] = out[c].astype(object).where(out[c].notna(), default)
    out["skipped"] = out["skipped"].astype(bool)
    for c in out.columns:
        if c in _INT_COLUMNS:
            out[c] = out[c].astype("int64")
        elif c in _STR_COLUMNS:
            out[c] = out[c].astype(object).where(out[c].notna(), "").astype(str)
        elif c in PARAM_STATS or c in LAYER_STATS:
            out[c] = out[c].astype("float64")
    return out.reset_index(drop=True)


@dataclass(eq=False)
class RecordBuffer:
    """Rows of one table gathered in memory as column chunks, written out as Parquet parts.

    At most ``max_rows`` rows stay in memory. Once that many are held they become a new Parquet
    part and are dropped: in ``folder`` when there is one, else in a private temporary folder
    (``tempfile.mkdtemp(prefix="gradprobe-")``) that :meth:`to_pandas` reads back and that is
    removed when the buffer is garbage collected or the interpreter exits. :meth:`flush` writes
    the rows held to ``folder`` (a no-op without one). Parts are written atomically: a file with
    a final name is always complete.

    Part names are ``<table>-<stem>-NNNNN.parquet``. A unique ``stem`` (``Storage`` gives
    ``r<rank>-<run id>``) lets several processes and several runs share one folder; without a
    stem, ``<table>-NNNNN.parquet`` with numbers after the parts already in the folder.

    ``rank`` fills the ``rank`` column of rows that come without one (``skipped`` is False and
    ``tier`` is ``"all"`` when absent). Each listener is called as ``listener(table, chunk)``
    with every chunk appended.
    """

    table: str
    folder: Path | None = None
    max_rows: int = 100_000
    rank: int = 0
    stem: str = ""
    listeners: list[Callable[[str, dict[str, np.ndarray]], None]] = field(default_factory=list)
    _chunks: list[dict[str, np.ndarray]] = field(default_factory=list)
    _n: int = 0
    _parts: list[Path] = field(default_factory=list)
    _flushed: int = 0
    _next: int = 0  # the next part number
    _spill: Path | None = None

    def __len__(self) -> int:
        return self._n + self._flushed

    @property
    def parts(self) -> list[Path]:
        """The Parquet parts written so far (in ``folder`` or the private temporary folder)."""
        return list(self._parts)

    @property
    def in_memory(self) -> int:
        """Rows held in memory (at most ``max_rows``)."""
        return self._n

    def extend(self, columns: Mapping[str, Sequence[object] | np.ndarray]) -> None:
        """Append columns of equal length: every column of the table (``rank`` and ``skipped``
        may be left out); other keys are ignored."""
        n = len(columns["step"])
        chunk: dict[str, np.ndarray] = {}
        for c in TABLES[self.table]:
            if c in columns:
                chunk[c] = np.asarray(columns[c])
            elif c == "rank":
                chunk[c] = np.full(n, self.rank, dtype=np.int64)
            elif c == "skipped":
                chunk[c] = np.zeros(n, dtype=bool)
            elif c == "tier":
                chunk[c] = np.full(n, "all", dtype=object)
            else:
                raise ValueError(f"{self.table} rows lack column {c!r}; got {sorted(columns)}")
            if len(chunk[c]) != n:
                raise ValueError(f"{self.table} column {c!r} has {len(chunk[c])} values, step {n}")
        self._chunks.append(chunk)
        self._n += n
        for listener in self.listeners:
            listener(self.table, chunk)
        if self._n >= self.max_rows:
            self._write(self.folder if self.folder is not None else self._spill_folder())

    def flush(self) -> None:
        """Write the rows held in memory to a new Parquet part in ``folder`` (no-op without)."""
        if self.folder is not None and self._n:
            self._write(self.folder)

    def _write(self, folder: Path) -> None:
        with held_interrupts():  # the part is listed exactly when its rows leave memory
            self._write_part(folder)

    def _write_part(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        path = self._free_name(folder)
        _write_chunks(self._chunks, self.table, path)
        self._parts.append(path)
        self._flushed += self._n
        self._chunks, self._n = [], 0

    def _free_name(self, folder: Path) -> Path:
        stem = f"{self.table}-{self.stem}-" if self.stem else f"{self.table}-"
        while (path := folder / f"{stem}{self._next:05d}.parquet").exists():
            self._next += 1
        self._next += 1
        return path

    def _spill_folder(self) -> Path:
        if self._spill is None:
            self._spill = Path(tempfile.mkdtemp(prefix=f"gradprobe-{self.table}-"))
            weakref.finalize(self, _remove_folder, self._spill, os.getpid())
        return self._spill

    def _memory_frame(self) -> pd.DataFrame:
        if not self._chunks:
            return empty_frame(self.table)
        cols = {c: np.concatenate([ch[c] for ch in self._chunks]) for c in TABLES[self.table]}
        return conform(pd.DataFrame(cols), self.table)

    def to_pandas(self) -> pd.DataFrame:
        """Everything recorded: the Parquet parts written so far, then the rows in memory."""
        frames = [pd.read_parquet(p) for p in self._parts]
        frames.append(self._memory_frame())
        return concat_tables(frames, self.table)


def _remove_folder(path: Path, owner_pid: int) -> None:
    """Remove a buffer's temporary folder (only in the process that made it, not a fork)."""
    if os.getpid() == owner_pid:
        shutil.rmtree(path, ignore_errors=True)


def _arrow_type(column: str) -> pa.DataType:
    if column in _INT_COLUMNS:
        return pa.int64()
    if column in _STR_COLUMNS:
        return pa.string()
    return pa.bool_() if column == "skipped" else pa.float64()


def _write_chunks(chunks: list[dict[str, np.ndarray]], table: str, path: Path) -> None:
    """Write column chunks as one Parquet file, atomically, without building a DataFrame (the
    copies pandas makes would double the memory a full buffer needs while it is written)."""
    columns = {
        c: pa.chunked_array([pa.array(ch[c], type=_arrow_type(c)) for ch in chunks], _arrow_type(c))
        for c in TABLES[table]
    }
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(
        pa.table(columns),
        tmp,
        row_group_size=_ROW_GROUP,
        use_dictionary=[c for c in columns if c in _STR_COLUMNS],
    )
    tmp.replace(path)


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write atomically: a half-written file never carries the final name."""
    tmp = path.with_name(path.name + ".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write one records table as Parquet, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_parquet(frame, path)


def concat_tables(frames: Iterable[pd.DataFrame], table: str) -> pd.DataFrame:
    """Concatenate frames of one table, keeping the schema when all are empty."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return empty_frame(table)
    return conform(pd.concat(frames, ignore_index=True), table)


def weight_rows(params: pd.DataFrame) -> pd.DataFrame:
    """The rows of weight matrices and kernels (the notebooks' "kernel gradients")."""
    return params[params["param"].isin(["weight", "kernel"])]


def grad_norm_by_depth(params: pd.DataFrame, step: int | None = None) -> np.ndarray:
    """Weight-gradient L2 norms of one step (the first recorded by default), input to output."""
    w = weight_rows(params)
    if w.empty:
        return np.array([])
    step = int(w["step"].min()) if step is None else step
    return w[w["step"] == step].sort_values("depth")["grad_norm"].to_numpy(dtype=float)
