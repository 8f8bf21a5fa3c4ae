"""Raw per-step numbers turned into record rows, many steps at once.

A recorded step leaves a few small arrays (per parameter: gradient moments, squared weight and
update norms; per layer: output moments, dead fraction, squared backward norm). Building table
rows from them costs the same few dozen numpy calls whether the arrays hold one step or a
hundred, so steps wait here and become rows in one vectorised pass: when ``limit`` steps are
pending, and whenever the records are read or flushed. A step read by the monitor's fast path
(:meth:`PendingRows.slot`) writes its numbers in place, into one row of a :class:`Slab`: no
array of its own, nothing to concatenate. The arithmetic is
:mod:`gradprobe.stats`'s; every row carries ``skipped`` (the optimizer did not apply the step).
This module never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from gradprobe import stats as S
from gradprobe._interrupts import held_interrupts
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


class Slab:
    """Numbers of up to ``size`` steps of one :class:`ParamMeta`'s ``n`` parameters, one float64
    row of ``6 n`` per step, written in place (the C pass writes at :meth:`address`): ``n``
    gradient moments (sum, sum of squares, max |g|, zeros: ``4 n`` values), then ``n`` squared
    weight norms, then ``n`` numbers the squared update norms come from (see
    :meth:`PendingRows.commit`). Never reused once its rows are made (rows may be views of it).
    """

    def __init__(self, meta: ParamMeta, size: int) -> None:
        self.meta, self.n = meta, len(meta.numel)
        self.data = np.zeros((size, 6 * self.n))
        self.used = 0
        self._base, self._stride = self.data.ctypes.data, self.data.strides[0]

    def address(self, i: int) -> int:
        return self._base + i * self._stride

    def columns(self, i0: int, i1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows ``i0:i1`` as (moments (k, n, 4), squared weight norms (k, n), last part (k, n))."""
        n, block = self.n, self.data[i0:i1]
        return block[:, : 4 * n].reshape(-1, n, 4), block[:, 4 * n : 5 * n], block[:, 5 * n :]


class Slot(NamedTuple):
    """Where one step writes its numbers: row ``i`` of ``slab``, at ``address``."""

    slab: Slab
    i: int
    address: int


# how a step's squared update norms come from its slab row: u = scale * (the gradients' sums
# of squares | the row's last part as written); scale None: the last part as it is; NaN: unknown
FROM_GRAD, FROM_ROW = "grad", "row"
Update = tuple[str, np.ndarray | float | None]


def _updates(g: np.ndarray, last: np.ndarray, how: list[Update]) -> np.ndarray:
    """Squared update norms (k, n) of a run's steps (see :data:`Update`)."""
    if len({(src, id(scale)) for src, scale in how}) == 1:  # the same rule on every step
        src, scale = how[0]
        base = g[:, :, 1] if src == FROM_GRAD else last
        return base.copy() if scale is None else scale * base
    out = np.empty_like(last)
    for i, (src, scale) in enumerate(how):
        base = g[i, :, 1] if src == FROM_GRAD else last[i]
        out[i] = base if scale is None else scale * base
    return out


@dataclass
class _SlabRun:
    """Consecutive steps whose numbers are rows ``start:start + len(steps)`` of a slab."""

    slab: Slab
    start: int
    steps: list[int]
    how: list[Update]
    tiers: list[str]  # the ``tier`` column of each step


@dataclass
class PendingRows:
    """Per-step arrays waiting to become rows of the ``params`` and ``layers`` tables: the
    recorder adds a step's, then calls :meth:`materialize_if_full`."""

    params: RecordBuffer
    layers: RecordBuffer
    limit: int = 64
    _p: list[
        tuple[int, ParamMeta, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool, str]
    ] = field(default_factory=list)
    _l: list[tuple[int, LayerMeta, np.ndarray, np.ndarray, np.ndarray, bool]] = field(
        default_factory=list
    )
    _runs: list[_SlabRun] = field(default_factory=list)  # fast steps, in order among _p
    _order: list[int] = field(default_factory=list)  # per param step: -1 (in _p) or its run
    _slab: Slab | None = None

    def __len__(self) -> int:
        """Rows waiting (both tables)."""
        return self.pending_params() + sum(len(m.names) for _, m, *_ in self._l)

    def pending_params(self) -> int:
        return sum(len(m.numel) for _, m, *_ in self._p) + sum(
            r.slab.n * len(r.steps) for r in self._runs
        )

    def slot(self, meta: ParamMeta) -> Slot:
        """Where the next step of ``meta`` writes its numbers (``6 n`` float64, see
        :class:`Slab`); the step counts once :meth:`commit` is called (a slot not committed
        is handed out again)."""
        slab = self._slab
        if slab is None or slab.meta is not meta or slab.used >= len(slab.data):
            slab = self._slab = Slab(meta, self.limit)
        return Slot(slab, slab.used, slab.address(slab.used))

    def commit(self, step: int, slot: Slot, how: Update, tier: str = "all") -> None:
        """``slot`` holds ``step``'s numbers (a step not skipped, every gradient finite); its
        squared update norms come as ``how`` says (:data:`Update`); ``tier`` as for
        :meth:`add_params`."""
        slab = slot.slab
        if slab is not self._slab or slot.i != slab.used:  # rows were made since the slot
            g, w, last = slab.columns(slot.i, slot.i + 1)
            u = _updates(g, last, [how])[0]
            n = slab.n
            nans, zeros = np.full(n, np.nan), np.zeros(n, dtype=np.int64)
            self.add_params(step, slab.meta, g[0].copy(), w[0].copy(), u, nans, zeros, tier=tier)
            return
        run = self._runs[-1] if self._runs and self._order and self._order[-1] >= 0 else None
        if run is None or run.slab is not slab or run.start + len(run.steps) != slab.used:
            run = _SlabRun(slab, slab.used, [], [], [])
            self._runs.append(run)
        run.steps.append(step)
        run.how.append(how)
        run.tiers.append(tier)
        self._order.append(len(self._runs) - 1)
        slab.used += 1

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
        tier: str = "all",
    ) -> None:
        """``g`` (n, 4) gradient moments; ``w``, ``u`` squared weight and update norms (NaN when
        unknown); ``pe`` per-example gradient RMS (NaN when not measured); ``nonfinite`` counts;
        ``skipped``: the optimizer did not apply this step (a loss scaler found inf/NaN);
        ``tier``: what the step recorded (``"gradients"``: no layer rows; ``"all"``)."""
        self._p.append((step, meta, g, w, u, pe, nonfinite, bool(skipped), tier))
        self._order.append(-1)

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

    def materialize_if_full(self) -> None:
        """:meth:`materialize` once ``limit`` steps are pending (call it after a step's rows
        of both tables are added: a step is then never half turned into rows)."""
        if len(self._order) >= self.limit or len(self._l) >= self.limit:
            self.materialize()

    def materialize(self) -> None:
        """Turn every pending step into rows (in step order). A Ctrl-C waits until the rows
        are in the buffers (:func:`gradprobe._interrupts.held_interrupts`)."""
        with held_interrupts():
            self._materialize()

    def _materialize(self) -> None:
        p, runs, order = iter(self._p), self._runs, self._order
        self._p, self._runs, self._order, self._slab = [], [], [], None
        items: list[Any] = []  # steps added as arrays, waiting for the next slab run
        last = -1
        for where in order:
            if where < 0:
                items.append(next(p))
            elif where != last:  # a run's steps are consecutive
                for run in _runs(items):
                    self._param_rows(run)
                items, last = [], where
                self._slab_rows(runs[where])
        for run in _runs(items):
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
                "tier": np.repeat(np.array([r[8] for r in run], dtype=object), len(n)),
            }
        )

    def _slab_rows(self, run: _SlabRun) -> None:
        slab, k = run.slab, len(run.steps)
        meta, n = slab.meta, slab.n
        g3, w2, last = slab.columns(run.start, run.start + k)
        u = _updates(g3, last, run.how).reshape(-1)
        g, w = g3.reshape(-1, 4), w2.reshape(-1)
        nn = np.tile(meta.numel, k)
        stats = S.param_columns(
            g[:, SUM], g[:, SUMSQ], g[:, MAX_ABS], g[:, ZEROS], np.zeros(k * n), w, u, nn
        )
        self.params.extend(
            {
                "step": np.repeat(np.array(run.steps, dtype=np.int64), n),
                "layer": np.tile(meta.layers, k),
                "param": np.tile(meta.pnames, k),
                "depth": np.tile(meta.depth, k),
                "numel": nn,
                **stats,
                "pe_grad_rms": np.full(k * n, np.nan),
                "skipped": np.zeros(k * n, dtype=bool),
                "tier": np.repeat(np.array(run.tiers, dtype=object), n),
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
