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
=================  =========================================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

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

TABLES = {"params": PARAM_COLUMNS, "layers": LAYER_COLUMNS}
_INT_COLUMNS = {"step", "depth", "numel"}
_STR_COLUMNS = {"layer", "param", "kind", "activation", "variant"}


def empty_frame(table: str) -> pd.DataFrame:
    """An empty frame with the columns and dtypes of ``table`` (``params`` or ``layers``)."""
    return conform(pd.DataFrame({c: [] for c in TABLES[table]}), table)


def conform(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """Order the columns of ``table`` first and give them their dtypes; extra columns are kept."""
    columns = TABLES[table]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{table} records lack columns {missing}; got {list(frame.columns)}")
    extra = [c for c in frame.columns if c not in columns]
    out = frame[list(columns) + extra].copy()
    for c in out.columns:
        if c in _INT_COLUMNS:
            out[c] = out[c].astype("int64")
        elif c in _STR_COLUMNS:
            out[c] = out[c].astype(object).where(out[c].notna(), "").astype(str)
        elif c in PARAM_STATS or c in LAYER_STATS:
            out[c] = out[c].astype("float64")
    return out.reset_index(drop=True)


@dataclass
class RecordBuffer:
    """Rows of one table gathered in memory as column chunks, flushed to Parquet parts.

    With a ``folder``, memory stays bounded: once ``max_rows`` rows are held they are written to
    ``folder/<table>-NNNNN.parquet`` and dropped. Without one, every row stays in memory (for
    short runs and notebooks: a row costs about 150 bytes).
    """

    table: str
    folder: Path | None = None
    max_rows: int = 100_000
    _chunks: list[dict[str, np.ndarray]] = field(default_factory=list)
    _n: int = 0
    _parts: list[Path] = field(default_factory=list)
    _flushed: int = 0

    def __len__(self) -> int:
        return self._n + self._flushed

    @property
    def parts(self) -> list[Path]:
        """The Parquet parts written so far."""
        return list(self._parts)

    def extend(self, columns: Mapping[str, Sequence[object] | np.ndarray]) -> None:
        """Append columns of equal length (a mapping from every column name to values)."""
        chunk = {c: np.asarray(columns[c]) for c in TABLES[self.table]}
        self._chunks.append(chunk)
        self._n += len(chunk["step"])
        if self.folder is not None and self._n >= self.max_rows:
            self.flush()

    def flush(self) -> None:
        """Write the rows held in memory to a new Parquet part (no-op without a folder)."""
        if self.folder is None or self._n == 0:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{self.table}-{len(self._parts):05d}.parquet"
        _write_parquet(self._memory_frame(), path)
        self._parts.append(path)
        self._flushed += self._n
        self._chunks, self._n = [], 0

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
