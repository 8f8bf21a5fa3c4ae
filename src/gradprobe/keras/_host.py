"""A recorded step's tensors handed to the host in one buffer and reduced by the fused C pass.

On CPU, reducing inside fit's compiled step costs a graph op per statistic and shape group, and a
TensorFlow op on small tensors costs more in scheduling than in arithmetic. Instead, the step
ends by packing its raw tensors into one flat vector (one ``concatenate``): the gradients, the
weights before the update (and after it, unless the update is known to be ``-lr * g``), the
activation outputs and the backward signals ``dL/dh``. fit's train function returns that vector
beside its logs; the monitor takes it out (one transfer, zero-copy on CPU) and
:func:`reduce_step` reduces every slice with :mod:`gradprobe._fusednp`, the same float64 pass the
PyTorch side uses. The result is the step vector of :mod:`gradprobe.keras.monitor`, so both
paths give rows the same way. On an accelerator the reductions stay on the device (the ring).

:func:`pack` runs while fit's step is traced and returns the :class:`Layout` that says where each
tensor lies; the host knows the layout by its number, which is part of the output's key. Tensors
whose first dimension is unknown at trace time (the batch, when fit traced the step for a
partial last batch) go after those of static size; the host finds the batch from the vector's
length.
"""

from __future__ import annotations

import math
import queue
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from keras import ops
from keras.backend import standardize_dtype

from gradprobe import _fusednp as F
from gradprobe.keras._capture import LayerAcc

KEY = "__gradprobe_pack_"  # + layout number: the output of fit's step that holds the pack
# columns of the step vector (the monitor's): a parameter's row, a layer's row
P_COLS, L_COLS = 8, 7
# columns of a parameter row after `present`: sum, sumsq, max|g|, w^2, u^2, zeros, nonfinite
SUM, SUMSQ, MAX_ABS, WSQ, USQ, ZEROS, NONFINITE = range(1, 8)


@dataclass
class OutGroup:
    """Activation outputs of one shape per example, one band and one family: one C call."""

    idx: list[int]  # into Layout.out_layer
    rest: int  # elements per example
    units: int
    low: float
    high: float
    rect: bool  # rectifier: also which units fired


@dataclass
class Layout:
    """Where one traced step's buffers hold each tensor (offsets in elements).

    The parameters' tensors lie at the same offsets in three buffers: ``g`` (gradients), ``w``
    (weights before the update) and ``a`` (after it; absent when the update is ``-lr * g``,
    whose norm is ``lr * ||g||`` with lr^2 in ``extras[0]``). The layers' tensors (outputs,
    then backward signals) lie in ``l``, each ``batch * rest`` elements long.
    """

    n_params: int
    n_layers: int
    rows: np.ndarray  # param rows present in the step
    sizes: np.ndarray  # their element counts
    after: bool
    out_layer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    bwd_layer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    rest: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # outs, then bwd
    groups: list[OutGroup] = field(default_factory=list)
    pe_layer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # extras[1:]

    def __post_init__(self) -> None:
        offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        # one Slices per buffer read in one call (each keeps the addresses of its buffer)
        self.g, self.w, self.a = (F.Slices(offsets, self.sizes) for _ in range(3))
        self.rest_starts = np.concatenate([[0], np.cumsum(self.rest)[:-1]]).astype(np.int64)
        self.out_unique = len(set(self.out_layer.tolist())) == len(self.out_layer)
        self.bwd_unique = len(set(self.bwd_layer.tolist())) == len(self.bwd_layer)
        self._by_batch: dict[int, tuple[list[F.Slices], F.Slices]] = {}

    def signature(self) -> tuple:
        """Equal for layouts that place every tensor alike (a step traced twice, as in the
        two branches of a condition, gives one layout number)."""
        arrays = (self.rows, self.sizes, self.out_layer, self.bwd_layer, self.rest, self.pe_layer)
        groups = tuple((tuple(g.idx), g.rest, g.units, g.low, g.high, g.rect) for g in self.groups)
        return (self.n_params, self.n_layers, self.after, groups, *(a.tobytes() for a in arrays))

    def dynamic(self, batch: int) -> tuple[list[F.Slices], F.Slices]:
        """The slices of the layer tensors for a batch of ``batch`` examples: one per output
        group, and the backward signals."""
        if batch not in self._by_batch:
            offs = batch * self.rest_starts
            n_out = len(self.out_layer)
            groups = [F.Slices(offs[g.idx], batch * self.rest[g.idx]) for g in self.groups]
            bwd = F.Slices(offs[n_out:], batch * self.rest[n_out:])
            self._by_batch[batch] = groups, bwd
        return self._by_batch[batch]


def _static_rest(t: Any) -> int | None:
    """Elements per example of a batch-first tensor whose other dimensions are known."""
    shape = tuple(t.shape)
    if len(shape) < 1 or any(d is None for d in shape[1:]):
        return None
    return math.prod(shape[1:])


def common_dtype(tensors: list[Any]) -> str:
    """float64 when any tensor is, else float32 (float16/bfloat16 are exact in float32)."""
    return "float64" if any(standardize_dtype(t.dtype) == "float64" for t in tensors) else "float32"


def flat(tensors: list[Any], dtype: str) -> Any:
    """The tensors, cast to ``dtype``, end to end in one vector (one ``concatenate``)."""
    parts = [
        ops.reshape(t if standardize_dtype(t.dtype) == dtype else ops.cast(t, dtype), (-1,))
        for t in tensors
    ]
    return ops.concatenate(parts) if len(parts) > 1 else parts[0]


def static(tensors: list[Any]) -> bool:
    return all(None not in tuple(t.shape) for t in tensors)


def pack(
    n_params: int,
    n_layers: int,
    rows: list[int],
    grads: list[Any],
    before: Any,
    after: list[Any] | None,
    lr_sq: Any,
    layers: dict[int, LayerAcc],
    pe: dict[int, Any],
    dtype: str,
) -> tuple[Layout, dict[str, Any]] | None:
    """The layout and the buffers of one step, built with backend ops while the step is traced.

    ``before``: :func:`flat` of the weights before the update, in ``dtype`` (the caller reads
    them before the update: they must be copied by then). The buffers: ``g``, ``w``, ``a`` (see
    :class:`Layout`), ``l`` when layers were measured, and ``x``, float64: lr^2 (NaN without),
    then the per-example values. None when a layer tensor's shape beyond its first dimension is
    unknown (the caller then reduces on the device)."""
    sizes = np.array([math.prod(tuple(g.shape)) for g in grads], dtype=np.int64)
    if not static(grads):
        return None
    outs = [(j, o, a) for j, acc in layers.items() for o, a in acc.outs]
    bwd = [(j, g) for j, acc in layers.items() for g in acc.bwd]
    dyn = [o for _, o, _ in outs] + [g for _, g in bwd]
    rest = [_static_rest(t) for t in dyn]
    if any(r is None for r in rest):
        return None
    lay = Layout(
        n_params=n_params,
        n_layers=n_layers,
        rows=np.asarray(rows, dtype=np.int64),
        sizes=sizes,
        after=after is not None,
        out_layer=np.array([j for j, _, _ in outs], dtype=np.int64),
        bwd_layer=np.array([j for j, _ in bwd], dtype=np.int64),
        rest=np.array(rest, dtype=np.int64),
        pe_layer=np.array(list(pe), dtype=np.int64),
    )
    keyed: dict[tuple[Any, ...], list[int]] = {}
    for i, (_, o, act) in enumerate(outs):
        band = act is not None and act.family == "saturating"
        rect = act is not None and act.family == "rectifier" and len(tuple(o.shape)) >= 2
        low, high = (act.low, act.high) if band and act is not None else (-math.inf, math.inf)
        units = int(tuple(o.shape)[-1]) if len(tuple(o.shape)) >= 2 else int(rest[i] or 1)
        keyed.setdefault((rest[i], units, low, high, rect), []).append(i)
    lay.groups = [OutGroup(idx, r, u, lo, hi, rc) for (r, u, lo, hi, rc), idx in keyed.items()]
    lr = ops.cast(lr_sq, "float64") if lr_sq is not None else ops.convert_to_tensor(math.nan)
    extras = [ops.cast(lr, "float64")] + [ops.cast(v, "float64") for v in pe.values()]
    bufs = {"g": flat(grads, dtype), "w": before, "x": ops.stack(extras)}
    if after is not None:
        bufs["a"] = flat(after, dtype)
    if dyn:
        bufs["l"] = flat(dyn, common_dtype(dyn))
    return lay, bufs


def reduce_step(lay: Layout, bufs: dict[str, np.ndarray]) -> np.ndarray:
    """The step vector (``P_COLS`` per parameter, then ``L_COLS`` per layer) of one step."""
    extras = bufs["x"]
    vec = np.full(lay.n_params * P_COLS + lay.n_layers * L_COLS, np.nan)
    p = vec[: lay.n_params * P_COLS].reshape(lay.n_params, P_COLS)
    p[:] = 0.0
    if len(lay.rows):
        g, w = bufs["g"], bufs["w"]
        m = lay.g.moments(g)
        block = np.empty((len(lay.rows), P_COLS))
        block[:, 0] = 1.0
        block[:, SUM : MAX_ABS + 1] = m[:, :3]
        block[:, ZEROS] = m[:, 3]
        block[:, WSQ] = lay.w.sq_norms(w)
        if lay.after:
            block[:, USQ] = lay.a.sq_dists(bufs["a"], lay.w, w)
        else:
            block[:, USQ] = extras[0] * m[:, 1]
        block[:, NONFINITE] = 0.0
        bad = ~np.isfinite(m[:, 1])
        if bad.any():
            block[bad, NONFINITE] = F.nonfinite_counts(g, lay.g.offsets[bad], lay.sizes[bad])
        p[lay.rows] = block
    out = vec[lay.n_params * P_COLS :].reshape(lay.n_layers, L_COLS)
    if len(lay.pe_layer):
        out[lay.pe_layer, 6] = extras[1:]
    if "l" in bufs:
        _layers(lay, bufs["l"], out)
    return vec


def _layers(lay: Layout, buf: np.ndarray, out: np.ndarray) -> None:
    """Fill ``out`` (layers, L_COLS), NaN on entry, with the layers' numbers."""
    per_batch = int(lay.rest.sum())
    batch = len(buf) // per_batch if per_batch else 0
    if batch * per_batch != len(buf):
        raise ValueError(f"{len(buf)} layer elements do not fit batch * {per_batch}")
    slices, bwd = lay.dynamic(batch)
    n_out = len(lay.out_layer)
    if n_out:
        stats = np.empty((n_out, 4))
        alive: dict[int, np.ndarray] = {}
        for g, sl in zip(lay.groups, slices, strict=True):
            idx = g.idx
            s, fired = sl.outputs(buf, g.units, g.low, g.high, g.rect)
            stats[idx] = s
            if fired is not None:
                for i, f in zip(idx, fired, strict=True):
                    j = int(lay.out_layer[i])
                    alive[j] = f if j not in alive else (alive[j] | f)
        _by_layer(out[:, :4], stats, lay.out_layer, lay.out_unique)
        for j, f in alive.items():
            out[j, 4] = 1.0 - f.mean()
    if len(lay.bwd_layer):
        sq = bwd.sq_norms(buf)
        _by_layer(out[:, 5:6], sq[:, None], lay.bwd_layer, lay.bwd_unique)


def _by_layer(out: np.ndarray, rows: np.ndarray, owners: np.ndarray, unique: bool) -> None:
    """Rows summed per owning layer into ``out`` (left NaN for a layer with none)."""
    if unique:
        out[owners] = rows
        return
    summed = np.zeros((len(out), rows.shape[1]))
    np.add.at(summed, owners, rows)
    has = np.zeros(len(out), dtype=bool)
    has[owners] = True
    out[has] = summed[has]


class Reducer:
    """Reduces recorded steps on one worker thread while fit trains on (the C pass releases
    the GIL, and a Keras step on CPU keeps about one core busy); results come back in order.

    :meth:`put` hands over a step's buffers (backend tensors, kept alive until reduced; at most
    ``depth`` steps wait, then :meth:`put` waits); :meth:`take` returns the step vectors
    reduced so far, and with ``wait`` all of them. An error of the worker is raised by the next
    :meth:`take`. ``threaded=False`` reduces in :meth:`put` instead.
    """

    def __init__(self, threaded: bool = True, depth: int = 64) -> None:
        self.threaded = threaded
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._done: deque[tuple[int, np.ndarray, int]] = deque()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def put(self, step: int, tier: int, lay: Layout, bufs: dict[str, Any]) -> None:
        if not self.threaded:
            self._done.append((step, _reduce(lay, bufs), tier))
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="gradprobe-keras", daemon=True)
            self._thread.start()
        self._queue.put((step, tier, lay, bufs))

    def ready(self) -> int:
        return len(self._done)

    def take(self, wait: bool = False) -> list[tuple[int, np.ndarray, int]]:
        if wait and self._thread is not None:
            self._queue.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        out = []
        while self._done:
            out.append(self._done.popleft())
        return out

    def close(self) -> None:
        """Wait for the steps handed over, then stop the worker (idempotent)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                step, tier, lay, bufs = item
                self._done.append((step, _reduce(lay, bufs), tier))
            except BaseException as exc:  # raised on the fit's thread by take()
                self._error = exc
            finally:
                self._queue.task_done()


def _reduce(lay: Layout, bufs: dict[str, Any]) -> np.ndarray:
    return reduce_step(lay, {k: v.numpy() if hasattr(v, "numpy") else v for k, v in bufs.items()})
