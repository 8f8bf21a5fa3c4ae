"""Records as TensorBoard scalars, written with TensorBoard's own record format and protos.

Needs only the ``tensorboard`` package (``pip install 'gradprobe[tensorboard]'``): neither
TensorFlow nor torch is imported (TensorBoard's own ``EventFileWriter`` would import TensorFlow
when it is installed, so the event file is written here with its ``RecordWriter``).

One scalar per recorded step for each quantity, layer and parameter:

=======================================  ==================================================
``grad_norm/<layer>.<param>``            ||g||_2 of the parameter's gradient
``update_ratio/<layer>.<param>``         ||W_after - W_before|| / ||W_before||
``backward_norm/<layer>``                ||dL/dh||, the backward signal at the layer's output
``act_rms/<layer>``                      RMS of the layer's (activation) output
``saturated_frac/<layer>``               fraction of saturated units (sigmoid/tanh)
``dead_frac/<layer>``                    fraction of dead units (ReLU family)
=======================================  ==================================================

Values are TensorBoard ``simple_value`` scalars (float32). NaN means "not measured" in the
records and is left out; infinite values are written.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradprobe.errors import MissingExtraError

QUANTITIES = {
    "params": ("grad_norm", "update_ratio"),
    "layers": ("backward_norm", "act_rms", "saturated_frac", "dead_frac"),
}
_uid = itertools.count()


def _protos() -> tuple[Any, Any, Any]:
    """TensorBoard's Event and Summary protos and its RecordWriter, or MissingExtraError."""
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter
    except ImportError as exc:
        raise MissingExtraError(
            "tensorboard", "tensorboard", "writing TensorBoard event files"
        ) from exc
    return event_pb2, summary_pb2, RecordWriter


def tags(table: str, columns: Mapping[str, Any]) -> np.ndarray:
    """The per-row tag suffix: ``<layer>.<param>`` for ``params``, ``<layer>`` for ``layers``."""
    layer = np.asarray(columns["layer"]).astype(str).astype(object)
    if table == "params":
        return layer + "." + np.asarray(columns["param"]).astype(str).astype(object)
    return layer


class EventFile:
    """One TensorBoard event file (``events.out.tfevents.*``) in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self._event, self._summary, record_writer = _protos()
        folder.mkdir(parents=True, exist_ok=True)
        name = (
            f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
            f"{os.getpid()}.{next(_uid)}"
        )
        self.path = folder / name
        self._writer = record_writer(open(self.path, "wb"))  # noqa: SIM115 -- closed in close()
        self._put(self._event.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _put(self, event: Any) -> None:
        self._writer.write(event.SerializeToString())

    def add_rows(
        self, table: str, columns: Mapping[str, Any], wall_time: float | None = None
    ) -> None:
        """Write the quantities of ``table`` rows (columns of equal length), one event per step."""
        step = np.asarray(columns["step"], dtype=np.int64)
        if len(step) == 0:
            return
        order = np.argsort(step, kind="stable")
        step = step[order]
        suffix = tags(table, columns)[order]
        names = [(q, np.asarray(columns[q], dtype=np.float64)[order]) for q in QUANTITIES[table]]
        bounds = np.flatnonzero(np.diff(step)) + 1
        now = time.time()
        value = self._summary.Summary.Value
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(step)], strict=True):
            values = [
                value(tag=f"{q}/{t}", simple_value=v)
                for q, col in names
                for t, v in zip(suffix[lo:hi], col[lo:hi].tolist(), strict=True)
                if v == v  # NaN: not measured
            ]
            if values:
                summary = self._summary.Summary(value=values)
                self._put(self._event.Event(wall_time=now, step=int(step[lo]), summary=summary))

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        if not self._writer.closed:
            self._writer.close()


class EventLog:
    """Rows as they arrive -> one event file in ``folder``, opened on the first rows (and again
    after :meth:`close` if more come). A listener of :class:`~gradprobe.records.RecordBuffer`."""

    def __init__(self, folder: Path) -> None:
        _protos()  # fail now, not at the first step
        self.folder = folder
        self._file: EventFile | None = None

    def add(self, table: str, columns: Mapping[str, Any]) -> None:
        if self._file is None:
            self._file = EventFile(self.folder)
        self._file.add_rows(table, columns)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def write_events(params: pd.DataFrame, layers: pd.DataFrame, folder: Path) -> Path:
    """Write a run's rows (``params`` and ``layers`` tables) as one event file in ``folder``."""
    out = EventFile(folder)
    try:
        for table, frame in (("params", params), ("layers", layers)):
            out.add_rows(table, {c: frame[c].to_numpy() for c in frame.columns})
    finally:
        out.close()
    return out.path


def convert_run(run: Any, out_dir: Path) -> list[Path]:
    """Event files for a loaded run (:class:`gradprobe.run.Run`): one TensorBoard run per
    variant, ``OUT_DIR/<variant>``, or per variant and rank, ``OUT_DIR/<variant>/rank<r>``,
    when a variant was recorded by several processes. Returns the event files written."""
    from gradprobe.run import variant_dir

    params, layers = run.table("params"), run.table("layers")
    written = []
    for name in run.variants:
        p, lay = params[params["variant"] == name], layers[layers["variant"] == name]
        ranks = sorted(set(p["rank"]) | set(lay["rank"]))
        for r in ranks:
            sub = out_dir / variant_dir(name)
            if len(ranks) > 1:
                sub = sub / f"rank{r}"
            written.append(write_events(p[p["rank"] == r], lay[lay["rank"] == r], sub))
    return written
