"""CPU tensors through the fused C reductions of :mod:`gradprobe._fused`.

One call reads every element of every tensor once (the numpy and torch paths take one pass per
statistic) and returns float64 numpy arrays. A pass over many tensors with a million elements or
more in all is split across torch's thread count; those threads end with the call, so nothing is
left spinning against torch's own pool (as BLAS thread pools do, see :mod:`._reduce`).

Each function returns ``None`` when the reductions are not built or do not apply: a tensor that is
not :func:`plain` (off the CPU, sparse, nested, a tensor subclass such as a DTensor, which has no
memory of its own to read), or mixed or unsupported dtypes. The caller then takes its numpy/torch
path, which computes the same numbers.

Every sum and sum of squares is accumulated in float64, each element converted to float64 first
(float16/bfloat16 tensors are read as float32 copies, which is exact): a float32 square is exact in
float64, so values from 1e-38 to 3e38 per element neither underflow nor overflow.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from itertools import chain
from threading import get_ident as _thread
from typing import Any, NamedTuple

import numpy as np
import torch

try:
    from gradprobe import _fused
except ImportError:  # built without a C compiler: the numpy/torch paths do the work
    _fused = None

ENABLED = _fused is not None  # tests switch it off to run the other paths
_CODES = {torch.float32: 0, torch.float64: 1}
_NP = {0: np.float32, 1: np.float64}
_HALF = (torch.float16, torch.bfloat16)
_PLAIN_TYPES = frozenset({torch.Tensor, torch.nn.Parameter})
_STRIDED = torch.strided
_DATA_PTR, _NUMEL = torch.Tensor.data_ptr, torch.Tensor.numel


def available() -> bool:
    return ENABLED and _fused is not None


def plain(t: torch.Tensor) -> bool:
    """Whether C may read ``t``'s memory: a dense (strided, not nested) CPU tensor whose type is
    ``torch.Tensor``, ``nn.Parameter``, or a Parameter subclass that leaves dispatch to torch
    (FSDP's FlatParameter). Other tensor subclasses dispatch their ops elsewhere (DTensor,
    FakeTensor, functional wrappers): their ``data_ptr()`` is not their data (0 for a DTensor)."""
    cls = type(t)
    if cls not in _PLAIN_TYPES and not (
        issubclass(cls, torch.nn.Parameter)
        and cls.__torch_dispatch__ is torch.Tensor.__torch_dispatch__
    ):
        return False
    return t.layout is _STRIDED and t.is_cpu and not t.is_nested


class _Batch(NamedTuple):
    """Tensors ready for a pass: contiguous, one dtype (code), their addresses and sizes. The
    address array must live until the call returns (a temporary's memory could be reused)."""

    tensors: Sequence[torch.Tensor]
    code: int
    addrs: np.ndarray
    sizes: np.ndarray


def _prepare(tensors: Sequence[torch.Tensor], sizes: np.ndarray | None = None) -> _Batch | None:
    """The tensors as contiguous plain CPU arrays of one supported dtype, or None."""
    if not available() or not tensors:
        return None
    dtype = tensors[0].dtype
    code = _CODES.get(dtype)
    if code is not None and all(
        type(t) in _PLAIN_TYPES
        and t.layout is _STRIDED
        and t.is_cpu
        and not t.is_nested
        and t.dtype == dtype
        and t.is_contiguous()
        for t in tensors
    ):
        ready: Sequence[torch.Tensor] = tensors  # the common case, with as few calls as possible
    else:
        if dtype in _HALF:
            dtype, code = torch.float32, _CODES[torch.float32]
        if code is None or not all(map(plain, tensors)):
            return None
        if any(t.dtype != dtype and not (t.dtype in _HALF and code == 0) for t in tensors):
            return None
        ready = [t.detach().to(dtype).contiguous() for t in tensors]
        sizes = None
    addrs = _addresses(ready)
    sizes = _sizes(ready) if sizes is None else sizes
    if not addrs.all() and (sizes[addrs == 0] > 0).any():
        return None  # no memory behind a non-empty tensor (storage freed, as FSDP does)
    return _Batch(ready, code, addrs, sizes)


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
    b = _prepare(tensors)
    if b is None:
        return None
    out = np.empty((len(b.tensors), 4))
    _fused.moments(
        b.addrs.ctypes.data, b.sizes.ctypes.data, len(b.sizes), b.code, out.ctypes.data, _threads()
    )
    suspect = ~np.isfinite(out[:, 1])  # the kernel's max skips NaN: take it again, NaN included
    if suspect.any():
        for i in np.flatnonzero(suspect):
            out[i, 2] = float(b.tensors[int(i)].abs().max())
    return out


def sq_norms(tensors: Sequence[torch.Tensor], sizes: np.ndarray | None = None) -> np.ndarray | None:
    """Per tensor ||x||^2, squares and sums in float64. ``sizes``: the element counts of exactly
    these tensors (int64), when the caller keeps them."""
    b = _prepare(tensors, sizes)
    if b is None:
        return None
    out = np.empty(len(b.sizes))
    _fused.sumsq(
        b.addrs.ctypes.data, b.sizes.ctypes.data, len(b.sizes), b.code, out.ctypes.data, _threads()
    )
    return out


def sq_dists(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> np.ndarray | None:
    """Per pair of same-shaped tensors ||a - b||^2, differences and sums in float64."""
    pa, pb = _prepare(a), _prepare(b)
    if pa is None or pb is None or pa.code != pb.code:
        return None
    if any(x.shape != y.shape for x, y in zip(pa.tensors, pb.tensors, strict=True)):
        return None
    out = np.empty(len(pa.sizes))
    _fused.sqdist(
        pa.addrs.ctypes.data,
        pb.addrs.ctypes.data,
        pa.sizes.ctypes.data,
        len(pa.sizes),
        pa.code,
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
    b = _prepare(outs)
    if b is None or any(t.shape != b.tensors[0].shape for t in b.tensors):
        return None
    k = len(b.tensors)
    outer, units, inner = _layout(b.tensors[0].shape, unit_dim)
    stats = np.empty((k, 4))
    umax = None if unit_dim is None else np.empty((k, units), dtype=_NP[b.code])
    _fused.outputs(
        b.addrs.ctypes.data,
        k,
        outer,
        units,
        inner,
        b.code,
        low,
        high,
        stats.ctypes.data,
        0 if umax is None else umax.ctypes.data,
    )
    return stats, (None if umax is None else umax > 0)


class ParamPass:
    """A recorded step's reading of a fixed list of parameters, by two C calls that write in
    place: nothing is made per step but one address array.

    The weights (detached views of the parameters), their dtype and sizes are kept from one
    step to the next. The gradients are new tensors on every step under
    ``zero_grad(set_to_none=True)``: each call checks them (plain, dense, contiguous, on the
    CPU, of the weights' dtype and sizes) and reads every address again (the weights' too: an
    in-place resize may move a parameter's memory). Numbers are those of :func:`moments` and
    :func:`sq_norms` (the same C calls on the same tensors).
    """

    def __init__(self, weights: Sequence[torch.Tensor]) -> None:
        self.weights = list(weights)
        self.n = n = len(self.weights)
        self.dtype = self.weights[0].dtype if n else None
        code = _CODES.get(self.dtype) if n else None  # type: ignore[arg-type]
        self.code = -1 if code is None else code
        self.ok = code is not None and all(
            plain(w) and w.dtype == self.dtype and w.is_contiguous() for w in self.weights
        )
        self.sizes = array("q", map(_NUMEL, self.weights))
        self._sizes_at = self.sizes.buffer_info()[0]

    def _check(self, tensors: Sequence[Any]) -> bool:
        """Whether C may read ``tensors`` as it reads the weights: plain, dense, contiguous, on
        the CPU, of the weights' dtype and sizes (None fails)."""
        dtype = self.dtype
        return len(tensors) == self.n and all(
            type(t) in _PLAIN_TYPES
            and t.layout is _STRIDED
            and t.is_cpu
            and not t.is_nested
            and t.dtype is dtype
            and t.is_contiguous()
            and t.numel() == size
            for t, size in zip(tensors, self.sizes, strict=True)
        )

    def read(self, grads: Sequence[Any], out: int) -> bool:
        """Write ``n`` gradient moment rows (sum, sum of squares, max |g|, zeros) and then ``n``
        squared weight norms, float64, at address ``out`` (room for ``5 n`` numbers). False
        when a gradient is missing or not such a tensor, a tensor has no memory (nothing is
        written then), or a number is not finite (a NaN or inf: the caller takes the general
        path, which counts them and takes the max with NaN)."""
        if not (self.ok and available() and self._check(grads)):
            return False
        addrs = array("q", map(_DATA_PTR, chain(grads, self.weights)))
        if 0 in addrs:
            return False  # storage freed (FSDP), or an empty tensor: the general path
        at, n, code, threads = addrs.buffer_info()[0], self.n, self.code, _threads()
        _fused.moments(at, self._sizes_at, n, code, out, threads)
        _fused.sumsq(at + 8 * n, self._sizes_at, n, code, out + 32 * n, threads)
        return math.isfinite(_fused.sumsq1(out, 5 * n, 1))  # NaN/inf anywhere: not finite

    def sq_norms(self, tensors: Sequence[Any], out: int) -> bool:
        """||x||^2 of each of ``tensors`` (shaped as the weights) at address ``out``; False,
        with nothing written, when C may not read them."""
        if not (self.ok and available() and self._check(tensors)):
            return False
        addrs = array("q", map(_DATA_PTR, tensors))
        if 0 in addrs:
            return False
        at = addrs.buffer_info()[0]
        _fused.sumsq(at, self._sizes_at, self.n, self.code, out, _threads())
        return True

    def sq_dists(self, before: Sequence[Any], out: int) -> bool:
        """||w - b||^2 of each weight and tensor of ``before`` at address ``out``; False,
        with nothing written, when C may not read them."""
        if not (self.ok and available() and self._check(before)):
            return False
        addrs = array("q", map(_DATA_PTR, chain(before, self.weights)))
        if 0 in addrs:
            return False
        at, n = addrs.buffer_info()[0], self.n
        _fused.sqdist(at, at + 8 * n, self._sizes_at, n, self.code, out, _threads())
        return True


def _one(t: torch.Tensor) -> int | None:
    """The dtype code of a tensor the one-array kernels can read in place, else None."""
    if not (available() and plain(t) and t.is_contiguous()):
        return None
    if t.data_ptr() == 0 and t.numel() > 0:
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
    ``[low, high]``) and, with ``unit_dim``, per unit whether any element is positive.

    Called in a forward hook for each layer of a recorded step, so it is kept short: the shape
    checks of :func:`_one` in line for a plain ``torch.Tensor``, the layout and the per-unit
    scratch array (and its address) cached."""
    if type(t) is _TENSOR and ENABLED and _fused is not None:
        if t.layout is not _STRIDED or not t.is_cpu or t.is_nested or not t.is_contiguous():
            return None
        code = _CODES.get(t.dtype)
        addr = _DATA_PTR(t)
        if code is None or (addr == 0 and _NUMEL(t) > 0):
            return None
    else:
        code = _one(t)
        if code is None:
            return None
        addr = _DATA_PTR(t)
    key = (t.shape, unit_dim, code, _thread())  # a scratch array per thread
    lay = _LAYOUTS.get(key)
    if lay is None:
        if len(_LAYOUTS) >= _LAYOUTS_MAX:  # shapes that change with every batch: start again
            _LAYOUTS.clear()
        lay = _LAYOUTS[key] = _Layout(*_layout(t.shape, unit_dim), unit_dim, code)
    row = _fused.output1(addr, lay.outer, lay.units, lay.inner, code, low, high, lay.scratch_at)
    return row, (None if lay.scratch is None else lay.scratch > 0)


class _Layout:
    """How :func:`output_stats_one` reads one shape: (outer, units, inner) sizes and, with a unit
    dimension, a per-unit scratch array the C pass writes each unit's max into (one per shape,
    reused: each call turns it into a new boolean array before the next call writes it)."""

    __slots__ = ("outer", "units", "inner", "scratch", "scratch_at")

    def __init__(self, outer: int, units: int, inner: int, unit_dim: int | None, code: int):
        self.outer, self.units, self.inner = outer, units, inner
        self.scratch = None if unit_dim is None else np.empty(units, dtype=_NP[code])
        self.scratch_at = 0 if self.scratch is None else self.scratch.ctypes.data


_TENSOR = torch.Tensor
_LAYOUTS: dict[tuple[torch.Size, int | None, int, int], _Layout] = {}  # bounded: shapes seen
_LAYOUTS_MAX = 4096


def _layout(shape: torch.Size, unit_dim: int | None) -> tuple[int, int, int]:
    """(outer, units, inner) sizes of an array seen as units along ``unit_dim``."""
    if unit_dim is None or len(shape) == 0:
        return 1, int(shape.numel()), 1
    ud = unit_dim % len(shape)
    return math.prod(shape[:ud]), int(shape[ud]), math.prod(shape[ud + 1 :])
