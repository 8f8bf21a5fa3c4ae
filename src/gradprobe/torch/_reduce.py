"""Reductions of tensors to a few scalars, done where the tensors live.

On the CPU the tensors are read in place as numpy arrays (no copy) and reduced with one
``reduceat`` per statistic over all tensors at once. On an accelerator the same numbers are
computed with torch operations on the device, without any synchronisation; the
:class:`Collector` then moves everything a step produced to the host in one transfer.

numpy's BLAS is never called here (no ``dot``, ``einsum`` or ``@``): OpenBLAS threads spin after
each call and steal the cores from torch's own thread pool, which made a watched step many times
slower than a bare one. Plain ufunc reductions have no threads.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

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
    """All elements of CPU tensors, concatenated (one copy)."""
    return np.concatenate([_np(t).reshape(-1) for t in tensors])


def segment_starts(tensors: Sequence[torch.Tensor]) -> np.ndarray:
    sizes = np.fromiter((t.numel() for t in tensors), dtype=np.int64, count=len(tensors))
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


SMALL = 1 << 20  # below this many elements in all, numpy's single pass over one copy is fastest


def moments(tensors: Sequence[torch.Tensor]) -> np.ndarray | torch.Tensor:
    """Per tensor: sum, sum of squares, max |x|, count of exact zeros; shape (n, 4).

    Small CPU sets are concatenated once and reduced with ``reduceat`` (float64 sums); large
    sets and accelerator tensors use one torch reduction per statistic, in place, with no sync.
    Empty tensors are not allowed.
    """
    total = sum(t.numel() for t in tensors)
    if tensors[0].device.type == "cpu" and total <= SMALL:
        flat = flat_cpu(tensors)
        starts = segment_starts(tensors)
        out = np.empty((len(tensors), 4))
        out[:, SUM] = np.add.reduceat(flat, starts, dtype=np.float64)
        out[:, SUMSQ] = np.add.reduceat(np.square(flat, dtype=np.float64), starts)
        out[:, MAX_ABS] = np.maximum.reduceat(np.abs(flat), starts)
        out[:, ZEROS] = np.add.reduceat(flat == 0, starts, dtype=np.int64)
        return out
    ts = [t.detach() for t in tensors]
    norms = torch._foreach_norm(ts)
    maxabs = torch._foreach_norm(ts, float("inf"))
    rows = []
    for t, norm, mx in zip(ts, norms, maxabs, strict=True):
        n = t.numel()
        rows.append(
            torch.stack(
                [
                    t.sum(dtype=torch.float64),
                    norm.double().square(),
                    mx.double(),
                    (n - torch.count_nonzero(t)).double(),
                ]
            )
        )
    return torch.stack(rows)


def sq_norms(tensors: Sequence[torch.Tensor]) -> np.ndarray | torch.Tensor:
    """Per tensor ||x||^2 (one multi-tensor pass)."""
    total = sum(t.numel() for t in tensors)
    if tensors[0].device.type == "cpu" and total <= SMALL:
        flat = flat_cpu(tensors)
        return np.add.reduceat(np.square(flat, dtype=np.float64), segment_starts(tensors))
    return torch.stack(torch._foreach_norm([t.detach() for t in tensors])).double().square()


class UpdateMeter:
    """Measures ||W_after - W_before|| per tensor across an optimizer step.

    Small CPU models keep a float64 copy; large ones reuse preallocated buffers
    (one copy before the step, an in-place difference and one multi-tensor norm after).
    """

    def __init__(self) -> None:
        self._flat: np.ndarray | None = None
        self._bufs: list[torch.Tensor] = []
        self._tensors: list[torch.Tensor] = []

    def before(self, tensors: Sequence[torch.Tensor]) -> None:
        self._tensors = [t.detach() for t in tensors]
        total = sum(t.numel() for t in tensors)
        if tensors[0].device.type == "cpu" and total <= SMALL:
            self._flat = flat_cpu(tensors).astype(np.float64)
            return
        self._flat = None
        if [b.shape for b in self._bufs] != [t.shape for t in self._tensors] or any(
            b.dtype != t.dtype or b.device != t.device
            for b, t in zip(self._bufs, self._tensors, strict=True)
        ):
            self._bufs = [torch.empty_like(t) for t in self._tensors]
        torch._foreach_copy_(self._bufs, self._tensors)

    def after(self) -> np.ndarray | torch.Tensor | None:
        if not self._tensors:
            return None
        tensors, self._tensors = self._tensors, []
        if self._flat is not None:
            diff = flat_cpu(tensors).astype(np.float64) - self._flat
            self._flat = None
            return np.add.reduceat(np.square(diff), segment_starts(tensors))
        torch._foreach_sub_(self._bufs, tensors)
        return torch.stack(torch._foreach_norm(self._bufs)).double().square()

    def clear(self) -> None:
        self._flat, self._bufs, self._tensors = None, [], []


def nonfinite_counts(tensors: Sequence[torch.Tensor]) -> np.ndarray:
    """Count of NaN/inf elements per tensor (the rare path: only called when one is suspected)."""
    return np.array([int((~torch.isfinite(t.detach())).sum()) for t in tensors], dtype=np.int64)


def activation_moments(a: torch.Tensor, act: Activation | None) -> np.ndarray | torch.Tensor:
    """sum, sum of squares, element count and saturated count of an activation output."""
    if a.device.type == "cpu":
        x = _np(a).reshape(-1)
        sat = 0
        if act is not None and act.family == "saturating":
            sat = np.count_nonzero((x < act.low) | (x > act.high))
        return np.array(
            [x.sum(dtype=np.float64), np.square(x, dtype=np.float64).sum(), x.size, sat]
        )
    x = a.detach().float()
    sat_t = torch.zeros((), device=x.device)
    if act is not None and act.family == "saturating":
        sat_t = ((x < act.low) | (x > act.high)).sum().float()
    n = torch.tensor(float(x.numel()), device=x.device)
    return torch.stack([x.sum(), x.square().sum(), n, sat_t]).double()


def alive_units(a: torch.Tensor, unit_dim: int) -> np.ndarray | torch.Tensor:
    """Per unit: did any example give a positive output? (reduces all dims but ``unit_dim``)."""
    dims = tuple(d for d in range(a.ndim) if d != unit_dim % a.ndim)
    if a.device.type == "cpu":
        return _np(a).max(axis=dims) > 0
    return a.detach().amax(dim=dims) > 0


def sq_norm(g: torch.Tensor) -> float | torch.Tensor:
    """||g||^2 in float64 on the CPU, as a 0-d tensor elsewhere."""
    if g.device.type == "cpu":
        return float(np.square(_np(g), dtype=np.float64).sum())
    return g.detach().float().square().sum().double()


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
