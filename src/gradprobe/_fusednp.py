"""Numpy arrays through the fused C reductions of :mod:`gradprobe._fused` (no framework).

The arrays of one call are slices of one flat, contiguous float32 or float64 buffer, given by
their element offsets and sizes: a framework hands a step's tensors to the host as one buffer
(one transfer), and one C call reduces every slice of it, reading each element once with sums
and sums of squares in float64 (exact per element for float32 input, see ``_fused.c``).

Each function also has a numpy path, used when the C module is not built (or ``ENABLED`` is
switched off by a test); both give the same numbers up to float64 rounding.

    >>> buf = np.array([1, -2, 0, 3, 4], dtype=np.float32)
    >>> moments(buf, np.array([0, 3]), np.array([3, 2])).tolist()
    [[-1.0, 5.0, 2.0, 1.0], [7.0, 25.0, 4.0, 0.0]]
"""

from __future__ import annotations

import numpy as np

try:
    from gradprobe import _fused
except ImportError:  # built without a C compiler: numpy does the work
    _fused = None

ENABLED = _fused is not None
_CODES = {np.dtype(np.float32): 0, np.dtype(np.float64): 1}


def _ready(buf: np.ndarray) -> tuple[int, int, int] | None:
    """(dtype code, base address, item size) when C may read ``buf``; else None."""
    if not ENABLED or _fused is None:
        return None
    code = _CODES.get(buf.dtype)
    if code is None or buf.ndim != 1 or not buf.flags.c_contiguous:
        return None
    return code, buf.__array_interface__["data"][0], buf.itemsize


def _addrs(base: int, item: int, offsets: np.ndarray) -> np.ndarray:
    return (base + item * np.asarray(offsets, dtype=np.int64)).astype(np.int64)


def moments(buf: np.ndarray, offsets: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Per slice: sum, sum of squares, max |x| and count of exact zeros, shape (k, 4).

    max |x| is NaN for a slice holding a NaN (as numpy's is)."""
    sizes = np.ascontiguousarray(sizes, dtype=np.int64)
    out = np.empty((len(sizes), 4))
    c = _ready(buf)
    if c is None:
        for j, (o, n) in enumerate(zip(offsets, sizes, strict=True)):
            x = buf[o : o + n].astype(np.float64)
            out[j] = x.sum(), np.dot(x, x), np.abs(x).max(initial=0.0), n - np.count_nonzero(x)
        return out
    code, base, item = c
    addrs = _addrs(base, item, offsets)
    _fused.moments(addrs.ctypes.data, sizes.ctypes.data, len(sizes), code, out.ctypes.data)
    for i in np.flatnonzero(~np.isfinite(out[:, 1])):  # the kernel's max skips NaN
        lo, hi = int(offsets[i]), int(offsets[i] + sizes[i])
        out[i, 2] = np.abs(buf[lo:hi]).max(initial=0.0)
    return out


def sq_norms(buf: np.ndarray, offsets: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Per slice ||x||^2, squares and sums in float64, shape (k,)."""
    sizes = np.ascontiguousarray(sizes, dtype=np.int64)
    out = np.empty(len(sizes))
    c = _ready(buf)
    if c is None:
        for j, (o, n) in enumerate(zip(offsets, sizes, strict=True)):
            x = buf[o : o + n].astype(np.float64)
            out[j] = np.dot(x, x)
        return out
    code, base, item = c
    addrs = _addrs(base, item, offsets)
    _fused.sumsq(addrs.ctypes.data, sizes.ctypes.data, len(sizes), code, out.ctypes.data)
    return out


def sq_dists(buf: np.ndarray, a: np.ndarray, b: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Per pair of slices at offsets ``a`` and ``b`` (same sizes) ||x_a - x_b||^2 in float64."""
    sizes = np.ascontiguousarray(sizes, dtype=np.int64)
    out = np.empty(len(sizes))
    c = _ready(buf)
    if c is None:
        for j, (oa, ob, n) in enumerate(zip(a, b, sizes, strict=True)):
            d = buf[oa : oa + n].astype(np.float64) - buf[ob : ob + n].astype(np.float64)
            out[j] = np.dot(d, d)
        return out
    code, base, item = c
    pa, pb = _addrs(base, item, a), _addrs(base, item, b)
    _fused.sqdist(
        pa.ctypes.data, pb.ctypes.data, sizes.ctypes.data, len(sizes), code, out.ctypes.data
    )
    return out


def outputs(
    buf: np.ndarray,
    offsets: np.ndarray,
    units: int,
    size: int,
    low: float = -np.inf,
    high: float = np.inf,
    unit_max: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """For slices of one ``size``, seen as ``(size // units, units)`` (units last): per slice
    sum, sum of squares, element count and count outside ``[low, high]`` (shape (k, 4)); with
    ``unit_max``, per slice and unit whether any element is positive (shape (k, units))."""
    k, outer = len(offsets), size // units
    stats = np.empty((k, 4))
    c = _ready(buf)
    if c is None:
        alive = np.empty((k, units), dtype=bool) if unit_max else None
        for j, o in enumerate(offsets):
            x = buf[o : o + size].astype(np.float64)
            stats[j] = x.sum(), np.dot(x, x), size, np.count_nonzero((x < low) | (x > high))
            if alive is not None:
                alive[j] = (x.reshape(outer, units) > 0).any(axis=0)
        return stats, alive
    code, base, item = c
    addrs = _addrs(base, item, offsets)
    umax = np.empty((k, units), dtype=buf.dtype) if unit_max else None
    _fused.outputs(
        addrs.ctypes.data,
        k,
        outer,
        units,
        1,
        code,
        float(low),
        float(high),
        stats.ctypes.data,
        0 if umax is None else umax.ctypes.data,
    )
    return stats, (None if umax is None else umax > 0)


def nonfinite_counts(buf: np.ndarray, offsets: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Per slice, the number of NaN or infinite elements (float64)."""
    return np.array(
        [
            n - np.count_nonzero(np.isfinite(buf[o : o + n]))
            for o, n in zip(offsets, sizes, strict=True)
        ],
        dtype=np.float64,
    )
