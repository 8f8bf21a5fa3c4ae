"""Reductions of tensors to a few scalars, done where the tensors live.

On the CPU the fused C pass (:mod:`gradprobe.torch._native`) reads each tensor once in place
for all its statistics; where it is not built, the tensors are read in place as numpy arrays and
reduced with one ``reduceat`` per statistic over all tensors at once. On an accelerator the same
numbers are computed with torch operations on the device, without any synchronisation; the
:class:`Collector` then moves everything a step produced to the host in one transfer.

numpy's BLAS is never called here (no ``dot``, ``einsum`` or ``@``): OpenBLAS threads spin after
each call and steal the cores from torch's own thread pool, which made a watched step many times
slower than a bare one. Plain ufunc reductions have no threads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from gradprobe.torch import _native
from gradprobe.torch._activations import Activation

# columns of the per-tensor moments
SUM, SUMSQ, MAX_ABS, ZEROS = range(4)


def _np(t: torch.Tensor) -> np.ndarray:
    """A numpy view of a CPU tensor (float32 for half types, which numpy cannot read)."""
    t = t.detach()
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    return t.numpy()


def flat_cpu(tensors: Sequence[torch.Tensor]) -> np.ndarray:
    """All elements of CPU tensors, concatenated (one copy, one call)."""
    flat = torch.cat([t.detach().reshape(-1) for t in tensors])
    if flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.float()
    return flat.numpy()


def segment_starts(tensors: Sequence[torch.Tensor]) -> np.ndarray:
    sizes = np.fromiter((t.numel() for t in tensors), dtype=np.int64, count=len(tensors))
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


SMALL = 1 << 20  # below this many elements in all, numpy's single pass over one copy is fastest


def moments(
    tensors: Sequence[torch.Tensor], starts: np.ndarray | None = None, small: bool | None = None
) -> np.ndarray | torch.Tensor:
    """Per tensor: sum, sum of squares, max |x|, count of exact zeros; shape (n, 4).

    Small CPU sets are concatenated once and reduced with ``reduceat`` (float64 sums); large
    sets and accelerator tensors use one torch reduction per statistic, in place, with no sync.
    Empty tensors are not allowed. ``starts`` and ``small`` may be given when already known
    (see :class:`ParamViews`). CPU tensors go through the fused C pass when it is built.
    """
    if NUMPY_ON_CPU:
        fused = _native.moments(tensors)
        if fused is not None:
            return fused
    if small is None:
        small = tensors[0].device.type == "cpu" and sum(t.numel() for t in tensors) <= SMALL
    if small:
        flat = flat_cpu(tensors)
        starts = segment_starts(tensors) if starts is None else starts
        out = np.empty((len(tensors), 4))
        with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf are counted, not warned
            out[:, SUM] = np.add.reduceat(flat, starts, dtype=np.float64)
            # squares in float64: the variance sum(x^2)/n - mean^2 must cancel exactly
            out[:, SUMSQ] = np.add.reduceat(np.square(flat, dtype=np.float64), starts)
            out[:, MAX_ABS] = np.maximum(
                np.maximum.reduceat(flat, starts), -np.minimum.reduceat(flat, starts)
            )
        out[:, ZEROS] = np.add.reduceat((flat == 0).view(np.int8), starts, dtype=np.int64)
        return out
    rows = []
    for t in tensors:  # tensor by tensor: the later passes find it still in cache
        x = t.detach()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        lo, hi = torch.aminmax(x)  # one pass; far faster than an inf-norm on the CPU
        rows.append(
            torch.stack(
                [
                    x.sum(dtype=torch.float64),
                    torch.linalg.vector_norm(x).double().square(),
                    torch.maximum(-lo, hi).double(),
                    (x.numel() - torch.count_nonzero(x)).double(),
                ]
            )
        )
    return torch.stack(rows)


def sq_norms(
    tensors: Sequence[torch.Tensor], sizes: np.ndarray | None = None
) -> torch.Tensor | np.ndarray:
    """Per tensor ||x||^2: one multi-tensor pass that reads each tensor once and copies nothing.
    ``sizes``: the element counts of exactly these tensors, when known (see :class:`ParamViews`)."""
    if NUMPY_ON_CPU:
        fused = _native.sq_norms(tensors, sizes)
        if fused is not None:
            return fused
    return _torch_norms(tensors).square()


class ParamViews:
    """The watched parameters, flattened cheaply: numpy views of CPU parameters are made once
    and reused while each parameter keeps its storage (optimizers update in place)."""

    def __init__(self, tensors: Sequence[torch.Tensor]) -> None:
        self.tensors = [t.detach() for t in tensors]
        self.small = self.tensors[0].device.type == "cpu" and (
            sum(t.numel() for t in self.tensors) <= SMALL
        )
        self.sizes = np.array([t.numel() for t in self.tensors], dtype=np.int64)
        self.starts = segment_starts(self.tensors)
        self._ptrs: list[int] = []
        self._views: list[np.ndarray] = []

    def sq_norms(self) -> torch.Tensor | np.ndarray:
        """||w||^2 of each parameter now."""
        return sq_norms(self.tensors, self.sizes)

    def flat64(self) -> np.ndarray:
        """All elements as one float64 vector (small CPU sets only)."""
        ptrs = [t.data_ptr() for t in self.tensors]
        if ptrs != self._ptrs:  # first use, or a parameter was given new storage
            self._views = [_np(t).reshape(-1) for t in self.tensors]
            self._ptrs = ptrs
        return np.concatenate(self._views, dtype=np.float64)


class UpdateMeter:
    """Measures ||W_before|| and ||W_after - W_before|| per tensor across an optimizer step.

    Preallocated buffers take one copy of the weights before the step; after it, one pass reads
    both (the fused C pass on the CPU, else one norm per tensor). Without the fused pass, small
    CPU models keep a float64 copy instead.
    """

    def __init__(self) -> None:
        self._flat: np.ndarray | None = None
        self._bufs: list[torch.Tensor] = []
        self._views: ParamViews | None = None

    def before(self, views: ParamViews) -> np.ndarray | torch.Tensor:
        """Snapshot the parameters; returns their squared norms."""
        self._views = views
        if views.small and not (NUMPY_ON_CPU and _native.available()):
            self._flat = views.flat64()
            with np.errstate(invalid="ignore", over="ignore"):
                return np.add.reduceat(np.square(self._flat), views.starts)
        self._flat = None
        ts = views.tensors
        if [b.shape for b in self._bufs] != [t.shape for t in ts] or any(
            b.dtype != t.dtype or b.device != t.device for b, t in zip(self._bufs, ts, strict=True)
        ):
            self._bufs = [torch.empty_like(t) for t in ts]
        torch._foreach_copy_(self._bufs, ts)
        return sq_norms(self._bufs, views.sizes)  # the buffers have the parameters' shapes

    def after(self) -> np.ndarray | torch.Tensor | None:
        """Squared norms of the update since :meth:`before` (None if nothing was snapshot)."""
        views, self._views = self._views, None
        if views is None:
            return None
        if self._flat is not None:
            with np.errstate(invalid="ignore", over="ignore"):
                diff = views.flat64() - self._flat
                self._flat = None
                return np.add.reduceat(np.square(diff), views.starts)
        fused = _native.sq_dists(self._bufs, views.tensors) if NUMPY_ON_CPU else None
        if fused is not None:  # one pass over both, in float64
            return fused
        # ||before - after|| read in one pass per tensor, nothing written
        dist = [_dist(b, t) for b, t in zip(self._bufs, views.tensors, strict=True)]
        return torch.stack(dist).double().square()

    def clear(self) -> None:
        self._flat, self._bufs, self._views = None, [], None


def _dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||a - b|| (half types summed in float32, where their own range would overflow)."""
    if a.dtype in (torch.float16, torch.bfloat16):
        return torch.linalg.vector_norm(a.float() - b.float())
    return torch.dist(a, b)


def nonfinite_counts(tensors: Sequence[torch.Tensor]) -> np.ndarray:
    """Count of NaN/inf elements per tensor (the rare path: only called when one is suspected)."""
    return np.array([int((~torch.isfinite(t.detach())).sum()) for t in tensors], dtype=np.int64)


NUMPY_ON_CPU = True  # tests switch it off to run the accelerator path of moments on the CPU
DEFER = 1 << 16  # layer outputs and dL/dh up to this size wait for the step's batched reduction
EXACT_F32_COUNT = 1 << 24  # a float32 sum of 0/1 values is exact up to this many terms


def output_stats(
    outs: Sequence[torch.Tensor], act: Activation | None, unit_dim: int = -1
) -> tuple[torch.Tensor | np.ndarray, torch.Tensor | np.ndarray | None]:
    """Per tensor (all of one shape): sum, sum of squares, element count, saturated count
    (shape (k, 4)); and for rectifiers, per unit, whether any example was positive (k, units).

    Small CPU tensors are read in place by numpy, one at a time (float32 pairwise sums, no
    copies); otherwise the k tensors are stacked once and each statistic is one reduction over
    all of them, with no synchronisation.
    """
    if outs[0].device.type == "cpu" and NUMPY_ON_CPU:
        fused = _native_output_stats(outs, act, unit_dim)
        if fused is not None:
            return fused
        if outs[0].numel() <= DEFER:
            return _output_stats_cpu(outs, act, unit_dim)  # small: numpy's lower call overhead wins
    x = torch.stack([o.detach() for o in outs]) if len(outs) > 1 else outs[0].detach()[None]
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    flat = x.reshape(len(outs), -1)
    n = flat.shape[1]
    stats = torch.empty(len(outs), 4, dtype=torch.float64, device=x.device)
    stats[:, 2] = n
    stats[:, 3] = 0
    alive = None
    rectifier = act is not None and act.family == "rectifier" and x.ndim >= 3
    if rectifier and act.nonneg:  # type: ignore[union-attr]
        # per-unit sums: their total is the sum, and a unit is alive iff its sum is positive
        ud = unit_dim % (x.ndim - 1) + 1
        per_unit = x.sum(dim=tuple(d for d in range(1, x.ndim) if d != ud), dtype=torch.float64)
        stats[:, 0] = per_unit.sum(1)
        alive = per_unit > 0
    else:
        stats[:, 0] = flat.sum(1, dtype=torch.float64) if n > DEFER else flat.sum(1)
    stats[:, 1] = torch.linalg.vector_norm(flat, dim=1).double().square()
    if act is not None and act.family == "saturating":
        mid, half = (act.low + act.high) / 2, (act.high - act.low) / 2
        # |x - mid| > half as 0./1. in place, summed: far cheaper than a boolean count
        hits = flat.sub(mid).abs_().gt_(half)
        stats[:, 3] = hits.sum(1) if n <= EXACT_F32_COUNT else hits.sum(1, dtype=torch.float64)
    elif rectifier and alive is None:
        ud = unit_dim % (x.ndim - 1) + 1
        alive = x.amax(dim=tuple(d for d in range(1, x.ndim) if d != ud)) > 0
    return stats, alive


def _bounds(act: Activation | None, ndim: int, unit_dim: int) -> tuple[float, float, int | None]:
    """The fused pass's arguments for an activation: the band outside which an output counts as
    saturated (none: infinite), and the unit dimension when dead units are counted."""
    saturating = act is not None and act.family == "saturating"
    rectifier = act is not None and act.family == "rectifier" and ndim >= 2
    low, high = (act.low, act.high) if saturating else (-math.inf, math.inf)  # type: ignore[union-attr]
    return low, high, (unit_dim if rectifier else None)


def _native_output_stats(
    outs: Sequence[torch.Tensor], act: Activation | None, unit_dim: int
) -> tuple[np.ndarray, np.ndarray | None] | None:
    return _native.output_stats(outs, *_bounds(act, outs[0].ndim, unit_dim))


def output_stats_now(
    out: torch.Tensor, act: Activation | None, unit_dim: int = -1
) -> tuple[tuple[float, float, float, float], np.ndarray | None] | None:
    """:func:`output_stats` of one CPU tensor at once, through the fused pass, while the tensor
    is still in cache; None where that pass does not apply (the caller defers the tensor)."""
    if not NUMPY_ON_CPU:
        return None
    return _native.output_stats_one(out, *_bounds(act, out.ndim, unit_dim))


def sq_norm_now(t: torch.Tensor) -> float | None:
    """||t||^2 of one CPU tensor at once through the fused pass; None where it does not apply."""
    return _native.sq_norm_one(t) if NUMPY_ON_CPU else None


def _output_stats_cpu(
    outs: Sequence[torch.Tensor], act: Activation | None, unit_dim: int
) -> tuple[np.ndarray, np.ndarray | None]:
    stats = np.zeros((len(outs), 4))
    saturating = act is not None and act.family == "saturating"
    rectifier = act is not None and act.family == "rectifier" and outs[0].ndim >= 2
    alive = []
    with np.errstate(invalid="ignore", over="ignore"):
        for i, o in enumerate(outs):
            a = _np(o)
            f = a.reshape(-1)
            stats[i, :3] = f.sum(), np.square(f).sum(), f.size
            if saturating:
                stats[i, 3] = np.count_nonzero((f < act.low) | (f > act.high))  # type: ignore[union-attr]
            if rectifier:
                ud = unit_dim % a.ndim
                alive.append(a.max(axis=tuple(d for d in range(a.ndim) if d != ud)) > 0)
    return stats, (np.stack(alive) if rectifier else None)


def norms(tensors: Sequence[torch.Tensor]) -> torch.Tensor | np.ndarray:
    """||x|| of each tensor, one multi-tensor reduction, as a float64 vector."""
    if NUMPY_ON_CPU:
        fused = _native.sq_norms(tensors)
        if fused is not None:
            return np.sqrt(fused)
    return _torch_norms(tensors)


def _torch_norms(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.stack(torch._foreach_norm([t.detach() for t in tensors])).double()


def row_sq_norms(x: torch.Tensor) -> np.ndarray | torch.Tensor:
    """Per example (first dim) squared norm of the rest."""
    if x.device.type == "cpu":
        v = _np(x).reshape(x.shape[0], -1)
        return np.square(v, dtype=np.float64).sum(axis=1)
    return x.detach().reshape(x.shape[0], -1).float().square().sum(1).double()


class Collector:
    """Gathers a step's numbers; device tensors cross to the host in one transfer at the end."""

    def __init__(self) -> None:
        self._host: dict[str, np.ndarray] = {}
        self._dev: dict[str, torch.Tensor] = {}

    def put(self, key: str, value: np.ndarray | torch.Tensor | float) -> None:
        if isinstance(value, torch.Tensor):
            self._dev[key] = value
        else:
            self._host[key] = np.asarray(value)

    def resolve(self) -> dict[str, np.ndarray]:
        out = dict(self._host)
        if self._dev:
            keys = list(self._dev)
            flat = [self._dev[k].reshape(-1).double() for k in keys]
            host = torch.cat(flat).cpu().numpy()  # the one device-to-host transfer
            offset = 0
            for k, t in zip(keys, flat, strict=True):
                out[k] = host[offset : offset + t.numel()].reshape(self._dev[k].shape)
                offset += t.numel()
        self._host, self._dev = {}, {}
        return out
