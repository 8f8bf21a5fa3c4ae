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
    """Where one traced step's pack holds each tensor (offsets in elements)."""

    n_params: int
    n_layers: int
    rows: np.ndarray  # param rows present in the step
    sizes: np.ndarray  # their element counts
    g_off: np.ndarray
    w_off: np.ndarray
    a_off: np.ndarray | None  # weights after the update (None: lr^2 * ||g||^2 from extras[0])
    static: int  # elements of static size, at the front
    # per example: the rest of the pack is batch * sum(rest), batch-major per tensor
    out_layer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    bwd_layer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    rest: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # outs, then bwd
    groups: list[OutGroup] = field(default_factory=list)
    pe_layer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # extras[1:]
    rect_layers: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def _static_rest(t: Any) -> int | None:
    """Elements per example of a batch-first tensor whose other dimensions are known."""
    shape = tuple(t.shape)
    if len(shape) < 1 or any(d is None for d in shape[1:]):
        return None
    return math.prod(shape[1:])


def pack(
    n_params: int,
    n_layers: int,
    rows: list[int],
    grads: list[Any],
    before: list[Any],
    after: list[Any] | None,
    lr_sq: Any,
    layers: dict[int, LayerAcc],
    pe: dict[int, Any],
) -> tuple[Layout, Any, Any] | None:
    """The layout, the pack (one flat vector) and the extras (float64: lr^2, then per-example
    values) of one step, built with backend ops while the step is traced; None when a tensor's
    shape beyond its first dimension is unknown (the caller then reduces on the device)."""
    static_ts = [*grads, *before, *(after or [])]
    sizes = np.array([math.prod(tuple(g.shape)) for g in grads], dtype=np.int64)
    if any(None in tuple(t.shape) for t in static_ts):
        return None
    outs = [(j, o, a) for j, acc in layers.items() for o, a in acc.outs]
    bwd = [(j, g) for j, acc in layers.items() for g in acc.bwd]
    dyn = [o for _, o, _ in outs] + [g for _, g in bwd]
    rest = [_static_rest(t) for t in dyn]
    if any(r is None for r in rest):
        return None
    n = len(grads)
    starts = np.concatenate([[0], np.cumsum(np.tile(sizes, 3 if after is not None else 2))])
    lay = Layout(
        n_params=n_params,
        n_layers=n_layers,
        rows=np.asarray(rows, dtype=np.int64),
        sizes=sizes,
        g_off=starts[:n],
        w_off=starts[n : 2 * n],
        a_off=starts[2 * n : 3 * n] if after is not None else None,
        static=int(starts[-1]),
        out_layer=np.array([j for j, _, _ in outs], dtype=np.int64),
        bwd_layer=np.array([j for j, _ in bwd], dtype=np.int64),
        rest=np.array(rest, dtype=np.int64),
        pe_layer=np.array(list(pe), dtype=np.int64),
    )
    keyed: dict[tuple[Any, ...], list[int]] = {}
    rect_layers = set()
    for i, (j, o, act) in enumerate(outs):
        band = act is not None and act.family == "saturating"
        rect = act is not None and act.family == "rectifier" and len(tuple(o.shape)) >= 2
        low, high = (act.low, act.high) if band and act is not None else (-math.inf, math.inf)
        units = int(tuple(o.shape)[-1]) if len(tuple(o.shape)) >= 2 else int(rest[i] or 1)
        keyed.setdefault((rest[i], units, low, high, rect), []).append(i)
        if rect:
            rect_layers.add(j)
    lay.groups = [OutGroup(idx, r, u, lo, hi, rc) for (r, u, lo, hi, rc), idx in keyed.items()]
    lay.rect_layers = np.array(sorted(rect_layers), dtype=np.int64)
    tensors = static_ts + dyn
    dtypes = [standardize_dtype(t.dtype) for t in tensors]
    dtype = "float64" if "float64" in dtypes else "float32"  # float16/bfloat16: exact in float32
    flat = [
        ops.reshape(t if d == dtype else ops.cast(t, dtype), (-1,))
        for t, d in zip(tensors, dtypes, strict=True)
    ]
    buf = ops.concatenate(flat) if len(flat) > 1 else flat[0]
    lr = ops.cast(lr_sq, "float64") if lr_sq is not None else ops.convert_to_tensor(math.nan)
    extras = ops.stack([ops.cast(lr, "float64")] + [ops.cast(v, "float64") for v in pe.values()])
    return lay, buf, extras


def reduce_step(lay: Layout, buf: np.ndarray, extras: np.ndarray) -> np.ndarray:
    """The step vector (``P_COLS`` per parameter, then ``L_COLS`` per layer) of one pack."""
    p = np.zeros((lay.n_params, P_COLS))
    if len(lay.rows):
        m = F.moments(buf, lay.g_off, lay.sizes)
        block = p[lay.rows]
        block[:, 0] = 1.0
        block[:, SUM], block[:, SUMSQ], block[:, MAX_ABS] = m[:, 0], m[:, 1], m[:, 2]
        block[:, ZEROS] = m[:, 3]
        block[:, WSQ] = F.sq_norms(buf, lay.w_off, lay.sizes)
        if lay.a_off is not None:
            block[:, USQ] = F.sq_dists(buf, lay.a_off, lay.w_off, lay.sizes)
        else:
            block[:, USQ] = extras[0] * m[:, 1]
        bad = ~np.isfinite(m[:, 1])
        if bad.any():
            block[bad, NONFINITE] = F.nonfinite_counts(buf, lay.g_off[bad], lay.sizes[bad])
        p[lay.rows] = block
    return np.concatenate([p.reshape(-1), _layers(lay, buf, extras).reshape(-1)])


def _layers(lay: Layout, buf: np.ndarray, extras: np.ndarray) -> np.ndarray:
    out = np.full((lay.n_layers, L_COLS), np.nan)
    if not len(lay.rest):
        if len(lay.pe_layer):
            out[lay.pe_layer, 6] = extras[1:]
        return out
    per_batch = int(lay.rest.sum())
    dyn = len(buf) - lay.static
    batch = dyn // per_batch if per_batch else 0
    if batch * per_batch != dyn:
        raise ValueError(
            f"pack of {len(buf)} elements does not fit its layout ({lay.static} + "
            f"batch * {per_batch})"
        )
    offs = lay.static + batch * np.concatenate([[0], np.cumsum(lay.rest)[:-1]])
    n_out = len(lay.out_layer)
    if n_out:
        stats = np.empty((n_out, 4))
        alive: dict[int, np.ndarray] = {}
        for g in lay.groups:
            s, fired = F.outputs(
                buf, offs[g.idx], g.units, batch * g.rest, g.low, g.high, unit_max=g.rect
            )
            stats[g.idx] = s
            if fired is not None:
                for i, f in zip(g.idx, fired, strict=True):
                    j = int(lay.out_layer[i])
                    alive[j] = f if j not in alive else (alive[j] | f)
        out[:, :4] = _by_layer(stats, lay.out_layer, lay.n_layers)
        for j, f in alive.items():
            out[j, 4] = 1.0 - f.mean()
    if len(lay.bwd_layer):
        sq = F.sq_norms(buf, offs[n_out:], batch * lay.rest[n_out:])
        out[:, 5] = _by_layer(sq[:, None], lay.bwd_layer, lay.n_layers)[:, 0]
    if len(lay.pe_layer):
        out[lay.pe_layer, 6] = extras[1:]
    return out


def _by_layer(rows: np.ndarray, owners: np.ndarray, n: int) -> np.ndarray:
    """Rows summed per owning layer; NaN for a layer with none."""
    out = np.zeros((n, rows.shape[1]))
    np.add.at(out, owners, rows)
    out[np.setdiff1d(np.arange(n), owners)] = np.nan
    return out
