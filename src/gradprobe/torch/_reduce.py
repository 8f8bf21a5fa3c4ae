"""Reductions of tensors to a few scalars, done where the tensors live, behind one protocol.

A :class:`Reducer` turns tensors into per-tensor statistics. The monitor picks one at ``watch()``
and keeps it (no module-global switch):

- :class:`TorchReducer` (``reducer="torch"``): torch operations on the tensors' own device, no
  synchronisation; every sum and sum of squares is accumulated in float64, so elements from 1e-30
  to 1e30 neither underflow nor overflow. Results may be device tensors: the step's numbers cross
  to the host in one transfer (:func:`gradprobe.torch._step.fetch`). A call whose tensors live on
  several devices (a model split across GPUs, or partly offloaded to the CPU) gathers its
  results on one of them, the first accelerator (:func:`home`), never on the host.
- :class:`FusedReducer` (``reducer="fused"``): the C pass of :mod:`gradprobe.torch._native` reads
  each plain dense CPU tensor once for all its statistics and returns numpy arrays. A tensor that
  is not one (a tensor subclass such as DTensor, a sparse layout, a tensor off the CPU) goes
  through :class:`TorchReducer` instead, tensor by tensor: C never sees its memory, and numbers of
  device tensors stay on the device.

:func:`choose` resolves ``"auto"``: fused when the C pass is built and the model is on the CPU.

numpy's BLAS is never called here (no ``dot``, ``einsum`` or ``@``): OpenBLAS threads spin after
each call and steal the cores from torch's own thread pool.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from gradprobe.errors import UsageError
from gradprobe.torch import _native
from gradprobe.torch._activations import Activation

# columns of the per-tensor moments
SUM, SUMSQ, MAX_ABS, ZEROS = range(4)

Num = np.ndarray | torch.Tensor  # numbers on the host, or still on the device
OutputRow = tuple[tuple[float, float, float, float], np.ndarray | None]

DEFER = 1 << 16  # layer outputs and dL/dh up to this size wait for the step's batched reduction
REDUCERS = ("auto", "fused", "torch")


class Reducer(Protocol):
    """Per-tensor statistics of tensors; every result is float64 (host or device)."""

    name: str

    def moments(self, tensors: Sequence[torch.Tensor]) -> Num:
        """Per tensor: sum, sum of squares, max |x|, count of exact zeros; shape (n, 4)."""
        ...

    def sq_norms(self, tensors: Sequence[torch.Tensor]) -> Num:
        """Per tensor ||x||^2, shape (n,)."""
        ...

    def sq_dists(self, a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> Num:
        """Per pair of same-shaped tensors ||a - b||^2, shape (n,)."""
        ...

    def output_stats(
        self, outs: Sequence[torch.Tensor], act: Activation | None, unit_dim: int
    ) -> tuple[Num, Num | None]:
        """Per same-shaped output: sum, sum of squares, count, saturated count (k, 4); and for
        rectifiers, per unit, whether any example was positive (k, units)."""
        ...

    def output_now(
        self, out: torch.Tensor, act: Activation | None, unit_dim: int
    ) -> OutputRow | None:
        """:meth:`output_stats` of one tensor on the host at once, or None (the caller defers)."""
        ...

    def sq_norm_now(self, t: torch.Tensor) -> float | None:
        """||t||^2 on the host at once, or None (the caller defers)."""
        ...


def _half_to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _dense(t: torch.Tensor) -> torch.Tensor:
    """``t`` detached, and dense when it is sparse (``nn.Embedding(sparse=True)`` gradients:
    the elements not stored are zeros, and count as such)."""
    t = t.detach()
    return t if t.layout is torch.strided else t.to_dense()


def home(devices: Sequence[torch.device]) -> torch.device:
    """Where the results of tensors on ``devices`` are gathered: the first device that is not
    the CPU (moving numbers from the CPU to it costs no synchronisation; the other way would),
    else the CPU."""
    return next((d for d in devices if d.type != "cpu"), devices[0])


def _stack(rows: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.stack(rows)``; rows on several devices are first copied to their :func:`home`
    (device to device, or host to device: neither waits for the device)."""
    dev = rows[0].device
    if any(r.device != dev for r in rows):
        dev = home([r.device for r in rows])
        rows = [r.to(dev, non_blocking=True) for r in rows]
    return torch.stack(list(rows))


class TorchReducer:
    """Torch operations on any device; sums in float64; nothing synchronises.

    Every result is a float64 (bool for units alive) tensor on the tensors' device, or on their
    :func:`home` when a call mixes devices."""

    name = "torch"

    def moments(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        rows = []
        for t in tensors:  # tensor by tensor: the later passes find it still in cache
            x = _half_to_float(_dense(t))
            lo, hi = torch.aminmax(x)  # one pass; far faster than an inf-norm on the CPU
            rows.append(
                torch.stack(
                    [
                        x.sum(dtype=torch.float64),
                        torch.linalg.vector_norm(x, dtype=torch.float64).square(),
                        torch.maximum(-lo, hi).double(),
                        (x.numel() - torch.count_nonzero(x)).double(),
                    ]
                )
            )
        return _stack(rows)

    def sq_norms(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        ts = [_dense(t) for t in tensors]
        return _stack(torch._foreach_norm(ts, 2, dtype=torch.float64)).square()

    def sq_dists(self, a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
        # differences in float64: exact for every weight dtype, whatever the two values are
        d = [
            torch.linalg.vector_norm(x.detach().double() - y.detach().double())
            for x, y in zip(a, b, strict=True)
        ]
        return _stack(d).square()

    def output_stats(
        self, outs: Sequence[torch.Tensor], act: Activation | None, unit_dim: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = torch.stack([o.detach() for o in outs]) if len(outs) > 1 else outs[0].detach()[None]
        x = _half_to_float(x)
        flat = x.reshape(len(outs), -1)
        stats = torch.empty(len(outs), 4, dtype=torch.float64, device=x.device)
        stats[:, 2] = flat.shape[1]
        stats[:, 3] = 0
        alive = None
        rectifier = act is not None and act.family == "rectifier" and x.ndim >= 3
        if rectifier and act.nonneg:  # type: ignore[union-attr]
            # per-unit sums: their total is the sum, and a unit is alive iff its sum is positive
            ud = unit_dim % (x.ndim - 1) + 1
            dims = tuple(d for d in range(1, x.ndim) if d != ud)
            per_unit = x.sum(dim=dims, dtype=torch.float64)
            stats[:, 0] = per_unit.sum(1)
            alive = per_unit > 0
        else:
            stats[:, 0] = flat.sum(1, dtype=torch.float64)
        stats[:, 1] = torch.linalg.vector_norm(flat, dim=1, dtype=torch.float64).square()
        if act is not None and act.family == "saturating":
            mid, half = (act.low + act.high) / 2, (act.high - act.low) / 2
            stats[:, 3] = flat.sub(mid).abs_().gt_(half).sum(1, dtype=torch.float64)
        elif rectifier and alive is None:
            ud = unit_dim % (x.ndim - 1) + 1
            alive = x.amax(dim=tuple(d for d in range(1, x.ndim) if d != ud)) > 0
        return stats, alive

    def output_now(self, out: torch.Tensor, act: Activation | None, unit_dim: int) -> None:
        return None  # never synchronise: outputs wait for the step's batched reduction

    def sq_norm_now(self, t: torch.Tensor) -> None:
        return None


def plain(t: torch.Tensor) -> bool:
    """A plain dense CPU tensor: the only kind the C pass may read (no subclass such as DTensor,
    whose ``data_ptr()`` is not its data; no sparse layout; host memory). The C pass checks
    it itself (:func:`gradprobe.torch._native.plain`); this tells which tensors of a mixed
    call go through torch instead."""
    return _native.plain(t)


class FusedReducer:
    """The fused C pass for plain dense CPU tensors; :class:`TorchReducer` for any other tensor.

    Results are numpy arrays whenever every tensor of a call is plain (the common case). A call
    mixing kinds gathers its numbers where the torch part's are: on the host when those are
    (a DTensor's local shards on the CPU), else on that device (the fused part is copied there,
    host to device): no call waits for a device.
    """

    name = "fused"

    def __init__(self) -> None:
        self.torch = TorchReducer()

    def _split(
        self,
        tensors: Sequence[torch.Tensor],
        fused: Callable[[Sequence[torch.Tensor]], np.ndarray | None],
        fallback: Callable[[Sequence[torch.Tensor]], Num],
    ) -> Num:
        got = fused(tensors)  # None when a tensor is not plain dense CPU, or of another dtype
        if got is not None:
            return got
        ok = [plain(t) for t in tensors]
        if all(ok) or not any(ok):
            return fallback(tensors)
        idx = [i for i, k in enumerate(ok) if k]
        rest = [i for i, k in enumerate(ok) if not k]
        part = [tensors[i] for i in idx]
        a = fused(part)
        b = fallback([tensors[i] for i in rest])
        a = _host(fallback(part)) if a is None else a  # plain CPU tensors: no transfer
        if isinstance(b, torch.Tensor) and b.device.type != "cpu":
            return _interleave(b, rest, a, idx)
        out = np.empty((len(tensors), *a.shape[1:]))
        out[idx], out[rest] = a, _host(b)
        return out

    def moments(self, tensors: Sequence[torch.Tensor]) -> Num:
        return self._split(tensors, _native.moments, self.torch.moments)

    def sq_norms(self, tensors: Sequence[torch.Tensor]) -> Num:
        return self._split(tensors, _native.sq_norms, self.torch.sq_norms)

    def sq_dists(self, a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> Num:
        got = _native.sq_dists(a, b)
        return self.torch.sq_dists(a, b) if got is None else got

    def output_stats(
        self, outs: Sequence[torch.Tensor], act: Activation | None, unit_dim: int
    ) -> tuple[Num, Num | None]:
        got = _native.output_stats(outs, *_bounds(act, outs[0].ndim, unit_dim))
        return self.torch.output_stats(outs, act, unit_dim) if got is None else got

    def output_now(
        self, out: torch.Tensor, act: Activation | None, unit_dim: int
    ) -> OutputRow | None:
        return _native.output_stats_one(out, *_bounds(act, out.ndim, unit_dim))

    def sq_norm_now(self, t: torch.Tensor) -> float | None:
        return _native.sq_norm_one(t)


def choose(name: str, model: torch.nn.Module) -> Reducer:
    """The reducer ``name`` (one of :data:`REDUCERS`); ``"auto"``: fused when the C pass is built
    and the model's parameters are on the CPU, else torch."""
    if name not in REDUCERS:
        raise UsageError(f"reducer must be one of {', '.join(REDUCERS)}, got {name!r}")
    if name == "torch":
        return TorchReducer()
    built = _native._fused is not None
    if name == "fused":
        if not built:
            raise UsageError(
                "reducer='fused' needs gradprobe._fused, which is not built: reinstall with a C "
                "compiler (pip install -e .) or use reducer='torch'"
            )
        return FusedReducer()
    on_cpu = all(p.is_cpu for p in model.parameters())
    return FusedReducer() if built and on_cpu else TorchReducer()


def _bounds(act: Activation | None, ndim: int, unit_dim: int) -> tuple[float, float, int | None]:
    """The fused pass's arguments for an activation: the band outside which an output counts as
    saturated (none: infinite), and the unit dimension when dead units are counted."""
    saturating = act is not None and act.family == "saturating"
    rectifier = act is not None and act.family == "rectifier" and ndim >= 2
    low, high = (act.low, act.high) if saturating else (-math.inf, math.inf)  # type: ignore[union-attr]
    return low, high, (unit_dim if rectifier else None)


def _interleave(b: torch.Tensor, at_b: list[int], a: np.ndarray, at_a: list[int]) -> torch.Tensor:
    """Rows ``b`` (on a device) and ``a`` (on the host) as one tensor on ``b``'s device, row
    ``at_b[i]`` being ``b[i]`` and row ``at_a[j]`` being ``a[j]``. Copies go host to device
    without waiting (a blocking copy, or indexing with a Python list, would wait for the
    device's queue)."""
    a_dev = torch.from_numpy(np.ascontiguousarray(a)).to(b, non_blocking=True)
    where = np.argsort(np.array(at_b + at_a), kind="stable")
    order = torch.from_numpy(where).to(b.device, non_blocking=True)
    return torch.cat([b, a_dev]).index_select(0, order)


def _host(x: Num) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


class UpdateMeter:
    """Measures ||W_before||^2 and ||W_after - W_before||^2 per tensor across an optimizer step:
    one copy of the weights into preallocated buffers before the step, one pass over both after."""

    def __init__(self, reducer: Reducer) -> None:
        self.reducer = reducer
        self._bufs: list[torch.Tensor] = []
        self._tensors: list[torch.Tensor] | None = None

    def before(self, tensors: list[torch.Tensor]) -> Num:
        """Snapshot ``tensors`` (detached weights); returns their squared norms."""
        self.snapshot(tensors)
        return self.reducer.sq_norms(self._bufs)  # the buffers have the parameters' values

    def snapshot(self, tensors: list[torch.Tensor]) -> None:
        """:meth:`before` without the norms (the caller has them)."""
        self._tensors = tensors
        bufs = self._bufs
        if len(bufs) != len(tensors) or any(
            b.shape != t.shape or b.dtype != t.dtype or b.device != t.device
            for b, t in zip(bufs, tensors, strict=True)
        ):
            self._bufs = bufs = [torch.empty_like(t) for t in tensors]
        torch._foreach_copy_(bufs, tensors)

    def taken(self) -> list[torch.Tensor] | None:
        """The snapshot buffers of the weights :meth:`snapshot` took (None: none taken); the
        snapshot is used up."""
        tensors, self._tensors = self._tensors, None
        return None if tensors is None else self._bufs

    def after(self) -> Num | None:
        """Squared norms of the change since :meth:`before` (None if nothing was snapshot)."""
        tensors, self._tensors = self._tensors, None
        if tensors is None:
            return None
        return self.reducer.sq_dists(self._bufs, tensors)

    def clear(self) -> None:
        self._bufs, self._tensors = [], None


def nonfinite_counts(tensors: Sequence[torch.Tensor]) -> np.ndarray:
    """Count of NaN/inf elements per tensor (the rare path: only called when one is suspected),
    counted on the tensors' devices and read in one transfer."""
    if not tensors:
        return np.zeros(0, dtype=np.int64)
    counts = [(~torch.isfinite(_dense(t))).sum(dtype=torch.float64) for t in tensors]
    return _host(_stack(counts)).astype(np.int64)


def norms(reducer: Reducer, tensors: Sequence[torch.Tensor]) -> Any:
    """||x|| of each tensor (float64, host or device)."""
    sq = reducer.sq_norms(tensors)
    return sq.sqrt() if isinstance(sq, torch.Tensor) else np.sqrt(sq)


def row_sq_norms(x: torch.Tensor) -> torch.Tensor:
    """Per example (first dim) squared norm of the rest, float64 (no synchronisation)."""
    x = x.detach().reshape(x.shape[0], -1)
    return torch.linalg.vector_norm(x, dim=1, dtype=torch.float64).square()
