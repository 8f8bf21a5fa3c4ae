"""CPU tensors through the fused C reductions of :mod:`gradprobe._fused`.

One call reads every element of every tensor once (the numpy and torch paths take one pass per
statistic) and returns float64 numpy arrays. A pass over many tensors with a million elements or
more in all is split across torch's thread count; those threads end with the call, so nothing is
left spinning against torch's own pool (as BLAS thread pools do, see :mod:`._reduce`).

Each function returns ``None`` when the reductions are not built or do not apply (a tensor off
the CPU, mixed or unsupported dtypes); the caller then takes its numpy/torch path, which computes
the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

try:
    from gradprobe import _fused
except ImportError:  # built without a C compiler: the numpy/torch paths do the work
    _fused = None

ENABLED = _fused is not None  # tests switch it off to run the other paths
_CODES = {torch.float32: 0, torch.float64: 1}
_NP = {0: np.float32, 1: np.float64}


def available() -> bool:
    return ENABLED and _fused is not None


def _prepare(tensors: Sequence[torch.Tensor]) -> tuple[Sequence[torch.Tensor], int] | None:
    """The tensors as contiguous CPU arrays of one supported dtype, and that dtype's code."""
    if not available() or not tensors:
        return None
    dtype = tensors[0].dtype
    code = _CODES.get(dtype)
    if code is not None and all(
        t.is_cpu and t.dtype == dtype and t.is_contiguous() for t in tensors
    ):
        return tensors, code  # the common case, checked with as few calls as possible
    if dtype in (torch.float16, torch.bfloat16):
        dtype, code = torch.float32, _CODES[torch.float32]
    if code is None:
        return None
    ready = []
    for t in tensors:
        if not t.is_cpu:
            return None
        if t.dtype != dtype:
            if t.dtype not in (torch.float16, torch.bfloat16) or dtype != torch.float32:
                return None
            t = t.float()
        ready.append(t.detach().contiguous())
    return ready, code


def _addresses(tensors: Sequence[torch.Tensor]) -> np.ndarray:
    return np.array(list(map(torch.Tensor.data_ptr, tensors)), dtype=np.int64)


def _sizes(tensors: Sequence[torch.Tensor]) -> np.ndarray:
    return np.array(list(map(torch.Tensor.numel, tensors)), dtype=np.int64)


def _threads() -> int:
    """How many threads a large pass over many tensors may use: as many as torch's own ops (the
    passes run in the optimizer's hooks, between those ops, while their threads wait)."""
    return torch.get_num_threads()


def moments(tensors: Sequence[torch.Tensor]) -> np.ndarray | None:
    """Per tensor: sum, sum of squares, max |x| and count of exact zeros, shape (n, 4), sums in
    float64. max |x| is NaN when the tensor holds a NaN, as numpy's is."""
    prep = _prepare(tensors)
    if prep is None:
        return None
    ts, code = prep
    addrs, sizes = _addresses(ts), _sizes(ts)
    out = np.empty((len(ts), 4))
    _fused.moments(addrs.ctypes.data, sizes.ctypes.data, len(ts), code, out.ctypes.data, _threads())
    suspect = ~np.isfinite(out[:, 1])  # the kernel's max skips NaN: take it again, NaN included
    if suspect.any():
        for i in np.flatnonzero(suspect):
            out[i, 2] = float(ts[int(i)].abs().max())
    return out


def sq_norms(tensors: Sequence[torch.Tensor], sizes: np.ndarray | None = None) -> np.ndarray | None:
    """Per tensor ||x||^2 (float32 tensors: float32 runs of 256 elements, totals in float64).
    ``sizes``: the element counts of exactly these tensors, when the caller keeps them."""
    prep = _prepare(tensors)
    if prep is None:
        return None
    ts, code = prep
    addrs = _addresses(ts)
    sizes = _sizes(ts) if sizes is None else sizes
    out = np.empty(len(ts))
    _fused.sumsq(addrs.ctypes.data, sizes.ctypes.data, len(ts), code, out.ctypes.data, _threads())
    return out


def sq_dists(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> np.ndarray | None:
    """Per pair of same-shaped tensors ||a - b||^2, differences and sums in float64."""
    pa, pb = _prepare(a), _prepare(b)
    if pa is None or pb is None or pa[1] != pb[1]:
        return None
    if any(x.shape != y.shape for x, y in zip(pa[0], pb[0], strict=True)):
        return None
    # the address arrays are named so they outlive the call (a temporary's memory could be reused)
    addrs_a, addrs_b, sizes = _addresses(pa[0]), _addresses(pb[0]), _sizes(pa[0])
    out = np.empty(len(sizes))
    _fused.sqdist(
        addrs_a.ctypes.data,
        addrs_b.ctypes.data,
        sizes.ctypes.data,
        len(sizes),
        pa[1],
        out.ctypes.data,
        _threads(),
    )
    return out


def output_stats(
    outs: Sequence[torch.Tensor], low: float, high: float, unit_dim: int | None
) -> tuple[np.ndarray, np.ndarray | None] | None:
    """For same-shaped tensors: per tensor sum, sum of squares, element count and count outside
    ``[low, high]`` (shape (k, 4)); with ``unit_dim``, per tensor and unit along that dimension
    whether any element is positive (shape (k, units))."""
    prep = _prepare(outs)
    if prep is None:
        return None
    ts, code = prep
    outer, units, inner = _layout(ts[0].shape, unit_dim)
    addrs = _addresses(ts)
    stats = np.empty((len(ts), 4))
    umax = None if unit_dim is None else np.empty((len(ts), units), dtype=_NP[code])
    _fused.outputs(
        addrs.ctypes.data,
        len(ts),
        outer,
        units,
        inner,
        code,
        low,
        high,
        stats.ctypes.data,
        0 if umax is None else umax.ctypes.data,
    )
    return stats, (None if umax is None else umax > 0)


def _one(t: torch.Tensor) -> int | None:
    """The dtype code of a tensor the one-array kernels can read in place, else None."""
    if not (available() and t.is_cpu and t.is_contiguous()):
        return None
    return _CODES.get(t.dtype)


def sq_norm_one(t: torch.Tensor) -> float | None:
    """||t||^2 of one tensor, read in place (for a tensor just produced, still in cache)."""
    code = _one(t)
    if code is None:
        return None
    return _fused.sumsq1(t.data_ptr(), t.numel(), code)


def output_stats_one(
    t: torch.Tensor, low: float, high: float, unit_dim: int | None
) -> tuple[tuple[float, float, float, float], np.ndarray | None] | None:
    """:func:`output_stats` of one tensor: (sum, sum of squares, count, count outside
    ``[low, high]``) and, with ``unit_dim``, per unit whether any element is positive."""
    code = _one(t)
    if code is None:
        return None
    outer, units, inner = _layout(t.shape, unit_dim)
    umax = None if unit_dim is None else np.empty(units, dtype=_NP[code])
    row = _fused.output1(
        t.data_ptr(), outer, units, inner, code, low, high, 0 if umax is None else umax.ctypes.data
    )
    return row, (None if umax is None else umax > 0)


def _layout(shape: torch.Size, unit_dim: int | None) -> tuple[int, int, int]:
    """(outer, units, inner) sizes of an array seen as units along ``unit_dim``."""
    if unit_dim is None or len(shape) == 0:
        return 1, int(shape.numel()), 1
    ud = unit_dim % len(shape)
    return math.prod(shape[:ud]), int(shape[ud]), math.prod(shape[ud + 1 :])
