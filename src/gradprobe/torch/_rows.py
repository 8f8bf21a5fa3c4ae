"""Raw per-step numbers turned into record rows, many steps at once.

A recorded step leaves a few small arrays (per parameter: gradient moments, squared weight and
update norms; per layer: output moments, dead fraction, squared backward norm). Building table
rows from them costs the same few dozen numpy calls whether the arrays hold one step or a
hundred, so steps wait here and become rows in one vectorised pass: when ``limit`` steps are
pending, and whenever the records are read or flushed. The arithmetic is
:mod:`gradprobe.stats`'s; every row carries ``skipped`` (the optimizer did not apply the step).
This module never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradprobe import stats as S
from gradprobe.records import RecordBuffer

SUM, SUMSQ, MAX_ABS, ZEROS = range(4)  # columns of the gradient moments (see _reduce.moments)


@dataclass(frozen=True)
class ParamMeta:
    """What stays the same from step to step about the recorded parameters."""

    layers: np.ndarray
    pnames: np.ndarray
    depth: np.ndarray
    numel: np.ndarray


@dataclass(frozen=True)
class LayerMeta:
    """The layers one step measured, in depth order, and what kind each one is."""

    names: np.ndarray
    depth: np.ndarray
    kinds: np.ndarray
    acts: np.ndarray
    saturating: np.ndarray  # bool: the saturated fraction applies


@dataclass
class PendingRows:
    """Per-step arrays waiting to become rows of the ``params`` and ``layers`` tables."""

    params: RecordBuffer
    layers: RecordBuffer
    limit: int = 64
    _p: list[
        tuple[int, ParamMeta, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]
    ] = field(default_factory=list)
    _l: list[tuple[int, LayerMeta, np.ndarray, np.ndarray, np.ndarray, bool]] = field(
        default_factory=list
    )

    def __len__(self) -> int:
        """Rows waiting (both tables)."""
        return sum(len(m.numel) for _, m, *_ in self._p) + sum(len(m.names) for _, m, *_ in self._l)

    def pending_params(self) -> int:
        return sum(len(m.numel) for _, m, *_ in self._p)

    def add_params(
        self,
        step: int,
        meta: ParamMeta,
        g: np.ndarray,
        w: np.ndarray,
        u: np.ndarray,
        pe: np.ndarray,
        nonfinite: np.ndarray,
        *,
        skipped: bool = False,
    ) -> None:
        """``g`` (n, 4) gradient moments; ``w``, ``u`` squared weight and update norms (NaN when
        unknown); ``pe`` per-example gradient RMS (NaN when not measured); ``nonfinite`` counts;
        ``skipped``: the optimizer did not apply this step (a loss scaler found inf/NaN)."""
        self._p.append((step, meta, g, w, u, pe, nonfinite, bool(skipped)))
        if len(self._p) >= self.limit:
            self.materialize()

    def add_layers(
        self,
        step: int,
        meta: LayerMeta,
        m: np.ndarray,
        dead: np.ndarray,
        bsq: np.ndarray,
        *,
        skipped: bool = False,
    ) -> None:
        """``m`` (L, 4): sum, sum of squares, count, saturated count of each layer's output (NaN
        rows when not measured); ``dead`` fractions; ``bsq`` squared backward norms (NaN: none);
        ``skipped`` as for :meth:`add_params`."""
        self._l.append((step, meta, m, dead, bsq, bool(skipped)))
        if len(self._l) >= self.limit:
            self.materialize()

    def materialize(self) -> None:
        """Turn every pending step into rows (in step order)."""
        p, self._p = self._p, []
        for run in _runs(p):
            self._param_rows(run)
        lay, self._l = self._l, []
        for run in _runs(lay):
            self._layer_rows(run)

    def _param_rows(self, run: list[Any]) -> None:
        meta: ParamMeta = run[0][1]
        k, n = len(run), meta.numel
        g = np.concatenate([r[2] for r in run])
        nn = np.tile(n, k)
        stats = S.param_columns(
            g[:, SUM],
            g[:, SUMSQ],
            g[:, MAX_ABS],
            g[:, ZEROS],
            np.concatenate([r[6] for r in run]),
            np.concatenate([r[3] for r in run]),
            np.concatenate([r[4] for r in run]),
            nn,
        )
        self.params.extend(
            {
                "step": np.repeat(np.array([r[0] for r in run], dtype=np.int64), len(n)),
                "layer": np.tile(meta.layers, k),
                "param": np.tile(meta.pnames, k),
                "depth": np.tile(meta.depth, k),
                "numel": nn,
                **stats,
                "pe_grad_rms": np.concatenate([r[5] for r in run]),
                "skipped": np.repeat(np.array([r[7] for r in run], dtype=bool), len(n)),
            }
        )

    def _layer_rows(self, run: list[Any]) -> None:
        meta: LayerMeta = run[0][1]
        k, n_layers = len(run), len(meta.names)
        m = np.concatenate([r[2] for r in run])
        stats = S.layer_columns(
            m[:, 0],
            m[:, 1],
            m[:, 2],
            m[:, 3],
            np.concatenate([r[3] for r in run]),
            np.concatenate([r[4] for r in run]),
            np.tile(meta.saturating, k),
        )
        self.layers.extend(
            {
                "step": np.repeat(np.array([r[0] for r in run], dtype=np.int64), n_layers),
                "layer": np.tile(meta.names, k),
                "depth": np.tile(meta.depth, k),
                "kind": np.tile(meta.kinds, k),
                "activation": np.tile(meta.acts, k),
                **stats,
                "skipped": np.repeat(np.array([r[5] for r in run], dtype=bool), n_layers),
            }
        )


def _runs(items: list[Any]) -> list[list[Any]]:
    """Consecutive items that share one meta (item[1]), in order."""
    runs: list[list[Any]] = []
    for it in items:
        if runs and runs[-1][0][1] is it[1]:
            runs[-1].append(it)
        else:
            runs.append([it])
    return runs
