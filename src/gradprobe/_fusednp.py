"""Numpy arrays through the fused C reductions of :mod:`gradprobe._fused` (no framework).

The arrays of one call are slices of one flat, contiguous float32 or float64 buffer, given by
their element offsets and sizes: a framework hands a step's tensors to the host as one buffer
(one transfer), and one C call reduces every slice of it, reading each element once with sums
and sums of squares in float64 (exact per element for float32 input, see ``_fused.c``).

A :class:`Slices` is made once per layout and reused for every buffer of that layout: it keeps
the arrays the C functions read (addresses, sizes, results) and only rewrites the addresses for
each new buffer, so a call costs a few microseconds of Python. The module functions do the same
for one call.

Each reduction also has a numpy path, used when the C module is not built (or ``ENABLED`` is
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


def _at(a: np.ndarray) -> int:
    """The address of an array's data."""
    return int(a.__array_interface__["data"][0])


class Slices:
    """``k`` slices of a flat buffer: element ``offsets`` and ``sizes`` (int64)."""

    def __init__(self, offsets: np.ndarray, sizes: np.ndarray) -> None:
        self.offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        self.sizes = np.ascontiguousarray(sizes, dtype=np.int64)
        self.k = len(self.sizes)
        self._addrs = np.zeros(self.k, dtype=np.int64)
        self._p_addrs, self._p_sizes = _at(self._addrs), _at(self.sizes)
        self._end = int((self.offsets + self.sizes).max()) if self.k else 0
        # results, written by C and copied out by the callers before the next call
        self._mom, self._sq = np.empty((self.k, 4)), np.empty(self.k)
        self._p_mom, self._p_sq = _at(self._mom), _at(self._sq)

    def __getstate__(self) -> tuple[np.ndarray, np.ndarray]:
        return self.offsets, self.sizes

    def __setstate__(self, state: tuple[np.ndarray, np.ndarray]) -> None:
        self.__init__(*state)  # type: ignore[misc]  # the addresses belong to the new arrays

    def _bind(self, buf: np.ndarray) -> int | None:
        """Point the addresses at ``buf``; its dtype code, or None when C cannot read it."""
        if not ENABLED or _fused is None:
            return None
        code = _CODES.get(buf.dtype)
        if code is None or buf.ndim != 1 or not buf.flags.c_contiguous:
            return None
        if self._end > len(buf):
            raise ValueError(f"slices reach past the end of a buffer of {len(buf)} elements")
        np.multiply(self.offsets, buf.itemsize, out=self._addrs)
        self._addrs += _at(buf)
        return code

    def _each(self, buf: np.ndarray) -> list[np.ndarray]:
        return [
            buf[o : o + n].astype(np.float64)
            for o, n in zip(self.offsets.tolist(), self.sizes.tolist(), strict=True)
        ]

    def moments(self, buf: np.ndarray) -> np.ndarray:
        """Per slice: sum, sum of squares, max |x| and count of exact zeros, shape (k, 4).

        max |x| is NaN for a slice holding a NaN (as numpy's is). The result is overwritten
        by the next call of this object's methods: copy it to keep it."""
        out = self._mom
        code = self._bind(buf)
        if code is None:
            for j, x in enumerate(self._each(buf)):
                out[j] = x.sum(), x @ x, np.abs(x).max(initial=0.0), x.size - np.count_nonzero(x)
            return out
        _fused.moments(self._p_addrs, self._p_sizes, self.k, code, self._p_mom)
        for i in np.flatnonzero(~np.isfinite(out[:, 1])):  # the kernel's max skips NaN
            lo, hi = int(self.offsets[i]), int(self.offsets[i] + self.sizes[i])
            out[i, 2] = np.abs(buf[lo:hi]).max(initial=0.0)
        return out

    def sq_norms(self, buf: np.ndarray) -> np.ndarray:
        """Per slice ||x||^2, squares and sums in float64, shape (k,) (overwritten by the next
        call, like :meth:`moments`)."""
        code = self._bind(buf)
        if code is None:
            return np.array([x @ x for x in self._each(buf)], dtype=np.float64).reshape(self.k)
        _fused.sumsq(self._p_addrs, self._p_sizes, self.k, code, self._p_sq)
        return self._sq

    def sq_dists(
        self, buf: np.ndarray, other: Slices, other_buf: np.ndarray | None = None
    ) -> np.ndarray:
        """Per slice ||x - y||^2 with ``y`` the same slice of ``other`` (same sizes) in
        ``other_buf`` (default ``buf``; same dtype), float64 (overwritten by the next call,
        like :meth:`moments`)."""
        ob = buf if other_buf is None else other_buf
        if ob.dtype != buf.dtype:
            raise ValueError(f"sq_dists of {buf.dtype} and {ob.dtype} buffers")
        code, code2 = self._bind(buf), other._bind(ob)
        if code is None or code2 is None:
            pairs = zip(self._each(buf), other._each(ob), strict=True)
            return np.array([(x - y) @ (x - y) for x, y in pairs], dtype=np.float64).reshape(self.k)
        _fused.sqdist(self._p_addrs, other._p_addrs, self._p_sizes, self.k, code, self._p_sq)
        return self._sq

    def outputs(
        self,
        buf: np.ndarray,
        units: int,
        low: float = -np.inf,
        high: float = np.inf,
        unit_max: bool = False,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """For slices of one size, seen as ``(size // units, units)`` (units last): per slice
        sum, sum of squares, element count and count outside ``[low, high]`` (shape (k, 4));
        with ``unit_max``, per slice and unit whether any element is positive (k, units).
        The statistics are overwritten by the next call, like :meth:`moments`."""
        size = int(self.sizes[0]) if self.k else 0
        stats = self._mom
        code = self._bind(buf)
        if code is None:
            alive = np.empty((self.k, units), dtype=bool) if unit_max else None
            for j, x in enumerate(self._each(buf)):
                stats[j] = x.sum(), x @ x, size, np.count_nonzero((x < low) | (x > high))
                if alive is not None:
                    alive[j] = (x.reshape(-1, units) > 0).any(axis=0)
            return stats, alive
        umax = np.empty((self.k, units), dtype=buf.dtype) if unit_max else None
        _fused.outputs(
            self._p_addrs,
            self.k,
            size // units,
            units,
            1,
            code,
            float(low),
            float(high),
            self._p_mom,
            0 if umax is None else _at(umax),
        )
        return stats, (None if umax is None else umax > 0)


def moments(buf: np.ndarray, offsets: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """:meth:`Slices.moments` of one buffer."""
    return Slices(offsets, sizes).moments(buf).copy()


def sq_norms(buf: np.ndarray, offsets: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """:meth:`Slices.sq_norms` of one buffer."""
    return Slices(offsets, sizes).sq_norms(buf).copy()


def sq_dists(buf: np.ndarray, a: np.ndarray, b: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Per pair of slices at offsets ``a`` and ``b`` (same sizes) ||x_a - x_b||^2 in float64."""
    return Slices(a, sizes).sq_dists(buf, Slices(b, sizes)).copy()


def outputs(
    buf: np.ndarray,
    offsets: np.ndarray,
    units: int,
    size: int,
    low: float = -np.inf,
    high: float = np.inf,
    unit_max: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """:meth:`Slices.outputs` of slices of ``size`` elements of one buffer."""
    stats, alive = Slices(offsets, np.full(len(offsets), size)).outputs(
        buf, units, low, high, unit_max
    )
    return stats.copy(), alive


def nonfinite_counts(buf: np.ndarray, offsets: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Per slice, the number of NaN or infinite elements (float64)."""
    return np.array(
        [
            n - np.count_nonzero(np.isfinite(buf[o : o + n]))
            for o, n in zip(offsets, sizes, strict=True)
        ],
        dtype=np.float64,
    )
