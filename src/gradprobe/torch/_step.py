"""What one recorded step gathers, typed: layer captures per forward, and their reduction.

A forward's captures live in a :class:`Forward` until a backward reaches it; forwards that lead to
no backward (a validation batch with grad enabled, a second forward of the same batch) are dropped
when the next forward starts or the step comes. :class:`StepLayers` keeps the captures that count:
every forward + backward since the last optimizer step (all micro-batches under gradient
accumulation). :func:`reduce_layers` turns them into per-layer numbers with one batched reduction
per group of same-shaped tensors; :func:`fetch` moves every device tensor to the host in one
transfer.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from gradprobe.errors import GradprobeWarning
from gradprobe.torch._activations import Activation
from gradprobe.torch._dist import ParamLayout
from gradprobe.torch._native import ParamPass
from gradprobe.torch._reduce import (
    SUM,
    SUMSQ,
    FusedReducer,
    Num,
    Reducer,
    UpdateMeter,
    nonfinite_counts,
)
from gradprobe.torch._rows import FROM_GRAD, FROM_ROW, LayerMeta, ParamMeta, PendingRows, Slot


def fetch(values: list[Any]) -> list[Any]:
    """``values`` with every device tensor replaced by a float64 numpy array: one transfer for all
    of them (one per device when they live on several); numpy arrays, floats and None pass
    through."""
    dev = [i for i, v in enumerate(values) if isinstance(v, torch.Tensor)]
    if not dev:
        return values
    out = list(values)
    on: dict[torch.device, list[int]] = {}
    for i in dev:
        on.setdefault(values[i].device, []).append(i)
    for idx in on.values():
        flat = [values[i].detach().reshape(-1).double() for i in idx]
        host = torch.cat(flat).cpu().numpy()  # the one device-to-host transfer
        offset = 0
        for i, t in zip(idx, flat, strict=True):
            out[i] = host[offset : offset + t.numel()].reshape(values[i].shape)
            offset += t.numel()
    return out


@dataclass
class LayerAcc:
    """What the forwards and backwards of one step gathered for one layer."""

    act: Activation | None = None
    unit_dim: int = -1
    outs: list[tuple[torch.Tensor, int]] = field(default_factory=list)  # small, with _version
    parts: list[tuple[Num, Num | None]] = field(default_factory=list)  # large ones, reduced
    grads: list[torch.Tensor] = field(default_factory=list)  # small dL/dh, reduced at the step
    gnorms: list[Num] = field(default_factory=list)  # large ones: their norms
    x_rows: list[Num] = field(default_factory=list)  # per example ||x_b||^2 (per_example)
    d_rows: list[Num] = field(default_factory=list)  # per example ||delta_b||^2
    pending: torch.Tensor | None = None  # output waiting to see whether an activation follows
    # output moments already on the host: sum, sum of squares, count, saturated count
    m: tuple[float, ...] | None = None
    alive: np.ndarray | None = None  # units positive for some example
    bsq: float | None = None  # ||dL/dh||^2 already on the host

    def add_output(self, row: tuple[float, ...], alive: np.ndarray | None) -> None:
        m = self.m
        self.m = row if m is None else tuple(a + b for a, b in zip(m, row, strict=True))
        if alive is not None:
            self.alive = alive if self.alive is None else (self.alive | alive)

    def add_bsq(self, sq: float) -> None:
        self.bsq = sq if self.bsq is None else self.bsq + sq

    def merge(self, other: LayerAcc) -> None:
        """Add another forward's captures of the same layer."""
        if self.act is None:
            self.act, self.unit_dim = other.act, other.unit_dim
        self.outs += other.outs
        self.parts += other.parts
        self.grads += other.grads
        self.gnorms += other.gnorms
        self.x_rows += other.x_rows
        self.d_rows += other.d_rows
        if other.m is not None:
            self.add_output(other.m, other.alive)
        elif other.alive is not None:
            self.alive = other.alive if self.alive is None else (self.alive | other.alive)
        if other.bsq is not None:
            self.add_bsq(other.bsq)


@dataclass
class Forward:
    """The captures of one forward pass; ``backed`` once a backward reached one of its outputs."""

    layers: dict[str, LayerAcc] = field(default_factory=dict)
    backed: bool = False

    def layer(self, name: str) -> LayerAcc:
        acc = self.layers.get(name)
        if acc is None:
            acc = self.layers[name] = LayerAcc()
        return acc


@dataclass
class StepLayers:
    """Layer captures since the last step: forwards a backward reached, and the current one."""

    done: dict[str, LayerAcc] = field(default_factory=dict)
    current: Forward | None = None

    def begin(self) -> Forward:
        """A new forward starts: the current one counts only if a backward reached it."""
        self.settle()
        self.current = Forward()
        return self.current

    def forward(self) -> Forward:
        """The current forward (one is started when a layer runs outside the model's forward)."""
        return self.current if self.current is not None else self.begin()

    def settle(self) -> None:
        fwd, self.current = self.current, None
        if fwd is None or not fwd.backed:
            return  # no backward: a forward that leads to no step holds nothing
        if not self.done:
            self.done = fwd.layers
            return
        for name, acc in fwd.layers.items():
            mine = self.done.get(name)
            if mine is None:
                self.done[name] = acc
            else:
                mine.merge(acc)

    def take(self) -> dict[str, LayerAcc]:
        """The step's layer captures; the accumulator starts empty again."""
        self.settle()
        out, self.done = self.done, {}
        return out

    def clear(self) -> None:
        self.done, self.current = {}, None


@dataclass
class LayerNumbers:
    """One layer's numbers for one step, on the host."""

    # sum, sum of squares, count, saturated count of its output (a tuple, or an array row)
    m: tuple[float, ...] | np.ndarray | None = None
    alive: np.ndarray | None = None
    bsq: float | None = None
    pe: float | None = None  # mean over examples of ||x_b||^2 * ||delta_b||^2 (per_example)


@dataclass
class _Group:
    """Rows of one batched reduction and the layer each row belongs to."""

    names: list[str]
    stats: Num
    alive: Num | None = None


@dataclass
class LayerReduction:
    """A step's layer captures reduced on their devices, waiting for the step's one transfer:
    :attr:`values` go to :func:`fetch` with the step's other numbers, and :meth:`numbers` adds
    up what comes back. ``changed``: an output kept for the batched reduction was changed in
    place since it was seen (its value is lost, never misreported)."""

    layers: dict[str, LayerAcc]
    outs: list[_Group]
    gnorms: list[_Group]
    pe: list[tuple[str, Num]]
    changed: bool

    @property
    def values(self) -> list[Any]:
        return (
            [g.stats for g in self.outs]
            + [g.alive for g in self.outs]
            + [g.stats for g in self.gnorms]
            + [v for _, v in self.pe]
        )

    def numbers(self, values: list[Any]) -> dict[str, LayerNumbers]:
        """Per layer numbers from :attr:`values` fetched to the host (same order)."""
        k, j = len(self.outs), len(self.gnorms)
        out_stats, out_alive = values[:k], values[k : 2 * k]
        norm_vals, pe_vals = values[2 * k : 2 * k + j], values[2 * k + j :]
        res = {
            name: LayerNumbers(acc.m, acc.alive, acc.bsq)
            for name, acc in self.layers.items()
            if acc.m is not None or acc.bsq is not None
        }
        for grp, stats, alive in zip(self.outs, out_stats, out_alive, strict=True):
            stats = np.atleast_2d(stats)
            for r, name in enumerate(grp.names):
                n = res.setdefault(name, LayerNumbers())
                n.m = stats[r] if n.m is None else stats[r] + n.m  # (a tuple + array adds)
                if alive is not None:
                    a = np.atleast_2d(alive)[r].astype(bool)
                    n.alive = a if n.alive is None else (n.alive | a)
        for grp, norm in zip(self.gnorms, norm_vals, strict=True):
            flat = np.ravel(norm)
            for r, name in enumerate(grp.names):
                n = res.setdefault(name, LayerNumbers())
                n.bsq = (n.bsq or 0.0) + float(flat[r]) ** 2
        for (name, _), v in zip(self.pe, pe_vals, strict=True):
            res.setdefault(name, LayerNumbers()).pe = float(np.asarray(v).reshape(-1)[0])
        return res


def gather_layers(layers: dict[str, LayerAcc], reducer: Reducer) -> LayerReduction:
    """Per layer: summed output moments, units alive in any batch, ||dL/dh||^2 and the
    per-example product, with one batched reduction per group of same-shaped tensors, left
    where they were computed (no transfer: see :class:`LayerReduction`)."""
    buckets: dict[tuple[Any, ...], list[tuple[str, torch.Tensor]]] = {}
    outs: list[_Group] = []
    gnorms: list[_Group] = []
    pe: list[tuple[str, Num]] = []
    changed = False
    for name, acc in layers.items():
        for o, version in acc.outs:
            if o._version != version:
                changed = True
            else:
                key = ("o", o.shape, o.dtype, o.device, acc.act, acc.unit_dim)
                buckets.setdefault(key, []).append((name, o))
        for g in acc.grads:
            buckets.setdefault(("g", g.shape, g.dtype, g.device), []).append((name, g))
        for stats, alive in acc.parts:
            outs.append(_Group([name], stats, alive))
        if acc.gnorms:
            gnorms += [_Group([name], n) for n in acc.gnorms]
        if acc.x_rows and acc.d_rows:
            x, d = _cat(acc.x_rows), _cat(acc.d_rows)
            if x.shape == d.shape:
                pe.append((name, (x * d).mean()))
    for key, items in buckets.items():
        names, tensors = [n for n, _ in items], [t for _, t in items]
        if key[0] == "o":
            outs.append(_Group(names, *reducer.output_stats(tensors, key[4], key[5])))
        else:
            sq = reducer.sq_norms(tensors)
            gnorms.append(_Group(names, sq.sqrt() if isinstance(sq, torch.Tensor) else np.sqrt(sq)))
    return LayerReduction(layers, outs, gnorms, pe, changed)


def reduce_layers(
    layers: dict[str, LayerAcc], reducer: Reducer
) -> tuple[dict[str, LayerNumbers], bool]:
    """:func:`gather_layers`, moved to the host in one transfer of its own."""
    red = gather_layers(layers, reducer)
    return red.numbers(fetch(red.values)), red.changed


def _cat(values: list[Any]) -> Any:
    if isinstance(values[0], torch.Tensor):
        return torch.cat(values)
    return np.concatenate(values)


class DepthOrder:
    """Depth of each layer: the order in which layers that own parameters finish their forward
    (nested ones included). A layer that never runs as a module (``MultiheadAttention``'s
    ``out_proj``, whose weights its parent uses) sits just before its nearest ancestor that ran;
    one with no such ancestor comes after every layer that ran."""

    def __init__(self, layers: list[str]) -> None:
        self.pos: dict[str, int] = {}
        self.layers = list(dict.fromkeys(layers))
        self.version = 0
        self._depth: dict[str, int] = {}
        self._at = -1

    def see(self, name: str) -> None:
        if name not in self.pos:
            self.pos[name] = len(self.pos)
            self.version += 1

    def add_layers(self, layers: list[str]) -> None:
        new = [n for n in layers if n not in self.layers]
        if new:
            self.layers += new
            self.version += 1

    def depth(self, name: str) -> int:
        if self._at != self.version or name not in self._depth:
            if name not in self.layers:
                self.layers.append(name)
            self._depth = {n: i for i, n in enumerate(sorted(self.layers, key=self._key))}
            self._at = self.version
        return self._depth[name]

    def _key(self, name: str) -> tuple[float, int, str]:
        if name in self.pos:
            return (self.pos[name], 0, "")
        parts = name.split(".")
        for k in range(len(parts) - 1, -1, -1):
            anc = ".".join(parts[:k]) if k else "(root)"
            if anc in self.pos:
                return (self.pos[anc], -1, name)
        return (float("inf"), 0, name)


@dataclass(frozen=True)
class SgdPlan:
    """A ``torch.optim.SGD`` step whose update norm needs no snapshot of the weights.

    ``kind`` is ``"grad"`` when the step is ``-lr * g`` (no momentum, no weight decay) and
    ``"momentum"`` when it is ``-lr * buf`` (momentum without Nesterov; weight decay and
    dampening are inside ``buf``). ``lr_sq`` holds each parameter's lr squared. Only for float32
    and float64 weights: in lower precisions the rounding of the weights (bf16 SGD leaves most
    weights unchanged) makes the real change differ from the formula, so it is measured.
    """

    kind: str
    lr_sq: np.ndarray


def sgd_plan(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> SgdPlan | None:
    if type(optimizer) is not torch.optim.SGD:
        return None
    if any(p.dtype not in (torch.float32, torch.float64) for p in params):
        return None
    kinds, lr_of = set(), {}
    for group in optimizer.param_groups:
        if group.get("nesterov"):
            return None
        if group.get("momentum", 0):
            kinds.add("momentum")
        elif group.get("weight_decay", 0):
            return None
        else:
            kinds.add("grad")
        lr = float(group["lr"])
        for p in group["params"]:
            lr_of[id(p)] = lr
    if len(kinds) != 1 or any(id(p) not in lr_of for p in params):
        return None
    return SgdPlan(kinds.pop(), np.array([lr_of[id(p)] ** 2 for p in params]))


def _read_only(a: np.ndarray) -> np.ndarray:
    """``a``, made unwritable: it is shared by the rows of every step."""
    a.flags.writeable = False
    return a


@dataclass
class ParamSet:
    """What stays the same from step to step about the parameters that have gradients."""

    meta: ParamMeta
    params: list[torch.Tensor]
    weights: list[torch.Tensor]  # detached views of the parameters (plain tensors)
    is_weight: np.ndarray
    version: int  # of the depth order it was built with
    zeros: np.ndarray  # read-only fillers for the rows: no non-finite value, no number
    nans: np.ndarray
    entries: list[int] | None = None  # sharded: the layout's entries these rows are
    nonfinite: np.ndarray | None = None  # sharded: this step's non-finite counts, if any
    fast: ParamPass | None = None  # the in-place reading of every parameter (fused reducer)

    @classmethod
    def sharded(cls, lay: ParamLayout, entries: tuple[int, ...], order: DepthOrder) -> ParamSet:
        """The rows of a sharded model: one per entry (original parameter) with a gradient;
        ``params`` holds the tensors the optimizer updates (for the momentum buffers: none)."""
        chosen = [lay.entries[i] for i in entries]
        meta = ParamMeta(
            layers=np.array([layer for layer, _, _ in chosen], dtype=object),
            pnames=np.array([pn for _, pn, _ in chosen], dtype=object),
            depth=np.array([order.depth(layer) for layer, _, _ in chosen], dtype=np.int64),
            numel=np.array([n for _, _, n in chosen], dtype=np.int64),
        )
        n = len(chosen)
        return cls(
            meta=meta,
            params=list(lay.params),
            weights=[],
            is_weight=np.array([pn == "weight" for _, pn, _ in chosen]),
            version=order.version,
            zeros=_read_only(np.zeros(n, dtype=np.int64)),
            nans=_read_only(np.full(n, np.nan)),
            entries=list(entries),
        )

    @classmethod
    def build(cls, chosen: list[tuple[str, str, torch.Tensor]], order: DepthOrder) -> ParamSet:
        params = [p for _, _, p in chosen]
        meta = ParamMeta(
            layers=np.array([layer for layer, _, _ in chosen], dtype=object),
            pnames=np.array([pn for _, pn, _ in chosen], dtype=object),
            depth=np.array([order.depth(layer) for layer, _, _ in chosen], dtype=np.int64),
            numel=np.array([p.numel() for p in params], dtype=np.int64),
        )
        return cls(
            meta=meta,
            params=params,
            weights=[p.detach() for p in params],
            is_weight=np.array([pn == "weight" for _, pn, _ in chosen]),
            version=order.version,
            zeros=_read_only(np.zeros(len(params), dtype=np.int64)),
            nans=_read_only(np.full(len(params), np.nan)),
        )


@dataclass
class Reading:
    """What was read before an update: gradients, weights, the layers' captures."""

    ps: ParamSet | None
    g: Num | None  # (n, 4) gradient moments
    w: Num | None  # (n,) squared weight norms
    plan: SgdPlan | None
    layers: dict[str, LayerAcc]
    grad_scale: Num | float = 1.0  # the gradients are scaled by this (a fused optimizer, AMP)
    loss_scale: Num | float = 1.0  # the backward signal dL/dh is scaled by this
    skipped: bool = False
    found_inf: Num | None = None  # > 0: the scaler skips this step (read with the step's numbers)
    row: Slot | None = None  # read in place: where the step's numbers are (g and w in it)


def _scales_on_host(reading: Reading, grad_scale: Any, loss_scale: Any, found_inf: Any) -> None:
    """The scales and the scaler's verdict, fetched with the step's numbers, as floats."""
    reading.grad_scale = float(np.asarray(grad_scale).reshape(-1)[0])
    reading.loss_scale = float(np.asarray(loss_scale).reshape(-1)[0])
    if found_inf is not None and float(np.asarray(found_inf).reshape(-1)[0]) > 0:
        reading.skipped = True
    reading.found_inf = None


class Recorder:
    """Reads a step's numbers (:meth:`read` before the update, :meth:`finish` after it) and
    hands them to :class:`PendingRows` as row arrays."""

    def __init__(
        self,
        rows: PendingRows,
        reducer: Reducer,
        order: DepthOrder,
        kinds: dict[str, str],
        *,
        per_example: bool,
    ) -> None:
        self.rows, self.reducer, self.order, self.kinds = rows, reducer, order, kinds
        self.per_example = per_example
        self.params: list[tuple[str, str, torch.Tensor]] = []
        self.layout: ParamLayout | None = None  # a sharded model's pieces (None: plain)
        self._sets: dict[tuple[int, ...], ParamSet] = {}
        self._layer_metas: dict[tuple[Any, ...], LayerMeta] = {}
        self._updates = UpdateMeter(reducer)
        self._plan_key: tuple[Any, ...] | None = None
        self._plan: SgdPlan | None = None
        self._fast_ok = isinstance(reducer, FusedReducer) and not per_example
        self._all: tuple[int, ...] = ()
        self.warned_empty = False

    def set_params(
        self, params: list[tuple[str, str, torch.Tensor]], layout: ParamLayout | None = None
    ) -> None:
        """The parameters to record; ``layout``: how a sharded model holds them (None, or a
        trivial layout: each parameter is a plain local tensor, read directly)."""
        self.params = params
        self.layout = None if layout is None or layout.trivial else layout
        self._sets.clear()
        self._all = tuple(range(len(params)))
        self._plan_key = None

    # ------------------------------------------------------------------ reading
    def read(
        self,
        optimizer: torch.optim.Optimizer | None,
        layers: dict[str, LayerAcc],
        *,
        grad_scale: Num | float = 1.0,
        loss_scale: Num | float = 1.0,
        skipped: bool = False,
        found_inf: Num | None = None,
    ) -> Reading:
        """Queue the gradient moments and weight norms of every parameter that has a gradient
        now; snapshot the weights when the update must be measured. The scales and
        ``found_inf`` may be device tensors: they are read with the step's numbers."""
        if self.layout is not None:
            grad_scale, loss_scale, found_inf = fetch([grad_scale, loss_scale, found_inf])
            skipped = skipped or (found_inf is not None and float(np.ravel(found_inf)[0]) > 0)
            gs, ls = float(np.ravel(grad_scale)[0]), float(np.ravel(loss_scale)[0])
            return self._read_sharded(optimizer, layers, gs, ls, skipped)
        if (
            not skipped
            and found_inf is None
            and type(grad_scale) is float
            and grad_scale == 1.0
            and type(loss_scale) is float
        ):
            fast = self._read_fast(optimizer, layers, loss_scale)
            if fast is not None:
                return fast
        found = [p.grad for _, _, p in self.params]
        have = tuple(i for i, g in enumerate(found) if g is not None)
        if not have:
            return Reading(
                None, None, None, None, layers, grad_scale, loss_scale, skipped, found_inf
            )
        ps = self._sets.get(have)
        if ps is None or ps.version != self.order.version:
            ps = self._sets[have] = ParamSet.build([self.params[i] for i in have], self.order)
            if self._fast_ok and have == self._all:
                ps.fast = ParamPass(ps.weights)
        grads = found if len(have) == len(found) else [found[i] for i in have]
        g = None if skipped else self.reducer.moments(grads)  # type: ignore[arg-type]
        plan = self._plan_for(optimizer, ps) if optimizer is not None else None
        if optimizer is not None and plan is None:
            w = self._updates.before(ps.weights)
        else:
            w = self.reducer.sq_norms(ps.weights)
        return Reading(ps, g, w, plan, layers, grad_scale, loss_scale, skipped, found_inf)

    def _read_fast(
        self,
        optimizer: torch.optim.Optimizer | None,
        layers: dict[str, LayerAcc],
        loss_scale: float,
    ) -> Reading | None:
        """:meth:`read` when every parameter has a plain CPU gradient, all finite: the numbers
        go straight into the step's slab row (:meth:`PendingRows.slot`); None otherwise."""
        ps = self._sets.get(self._all)
        if ps is None or ps.fast is None or ps.version != self.order.version:
            return None
        slot = self.rows.slot(ps.meta)
        if not ps.fast.read([p.grad for p in ps.params], slot.address):
            return None  # (a NaN or inf: the general path counts them and takes the max again)
        plan = self._plan_for(optimizer, ps) if optimizer is not None else None
        if optimizer is not None and plan is None:
            self._updates.snapshot(ps.weights)
        return Reading(ps, None, None, plan, layers, 1.0, loss_scale, row=slot)

    def _read_sharded(
        self,
        optimizer: torch.optim.Optimizer | None,
        layers: dict[str, LayerAcc],
        grad_scale: float,
        loss_scale: float,
        skipped: bool,
    ) -> Reading:
        """:meth:`read` for a sharded model: each rank reduces the pieces it holds (plain
        local tensors), and :meth:`ParamLayout.merge` adds them up across the process group
        (a collective: every rank records the same steps). Numbers are global, on the host."""
        lay = self.layout
        assert lay is not None
        grads = lay.local_grads()
        if grads is None:
            return Reading(None, None, None, None, layers, grad_scale, loss_scale, skipped)
        present = lay.grad_present if lay.grad_present is not None else np.ones(1, bool)
        key = tuple(int(i) for i in np.flatnonzero(present))
        ps = self._sets.get(key)
        if ps is None or ps.version != self.order.version:
            ps = self._sets[key] = ParamSet.sharded(lay, key, self.order)
        g = None
        if not skipped:
            g = self._merge(self.reducer.moments(grads) if grads else None, "ssms", ps)
            if not np.isfinite(g[:, : SUMSQ + 1]).all():
                bad = nonfinite_counts(grads).astype(np.float64)[:, None] if grads else None
                ps.nonfinite = self._merge(bad, "s", ps)[:, 0].astype(np.int64)
            else:
                ps.nonfinite = None
        weights = lay.local_weights()
        if optimizer is not None:
            w = self._merge(self._updates.before(weights) if weights else None, "s", ps)
        else:
            w = self._merge(self.reducer.sq_norms(weights) if weights else None, "s", ps)
        return Reading(ps, g, w[:, 0], None, layers, grad_scale, loss_scale, skipped)

    def _merge(self, per_piece: Num | None, ops: str, ps: ParamSet) -> np.ndarray:
        """Per-piece numbers -> global per-entry rows of the entries in ``ps``."""
        lay = self.layout
        assert lay is not None
        rows = np.zeros((0, len(ops))) if per_piece is None else fetch([per_piece])[0]
        rows = np.asarray(rows, dtype=np.float64).reshape(lay.n_pieces, len(ops))
        return lay.merge(rows, ops)[ps.entries]

    def _plan_for(self, optimizer: torch.optim.Optimizer, ps: ParamSet) -> SgdPlan | None:
        """:func:`sgd_plan`, made again only when the groups' settings or the parameters change."""
        if type(optimizer) is not torch.optim.SGD:
            return None
        key = (
            id(ps),
            tuple(
                (
                    float(g["lr"]),
                    g.get("momentum", 0),
                    g.get("nesterov"),
                    g.get("weight_decay", 0),
                    len(g["params"]),
                )
                for g in optimizer.param_groups
            ),
        )
        if key != self._plan_key:
            self._plan_key, self._plan = key, sgd_plan(optimizer, ps.params)
        return self._plan

    # ---------------------------------------------------------------- finishing
    def finish(
        self,
        step: int,
        reading: Reading,
        optimizer: torch.optim.Optimizer | None,
        tier: str = "all",
    ) -> bool:
        """Measure the update (after the optimizer's step) and emit the step's rows (their
        ``tier`` column: what the step recorded). Returns whether an output was found changed
        in place (then outputs are reduced eagerly)."""
        if reading.row is not None:
            changed = self._finish_fast(step, reading, optimizer, tier)
        else:
            changed = self._finish_slow(step, reading, optimizer, tier)
        # rows are made between steps, so a Ctrl-C then leaves no step half recorded
        self.rows.materialize_if_full()
        return changed

    def _finish_slow(
        self, step: int, reading: Reading, optimizer: torch.optim.Optimizer | None, tier: str
    ) -> bool:
        u: Any = None
        plan = reading.plan
        if reading.ps is not None and optimizer is not None:
            if self.layout is not None:
                after = self._updates.after()
                u = self._merge(after, "s", reading.ps)[:, 0]
            elif plan is None:
                u = self._updates.after()
            elif plan.kind == "momentum":  # the step was -lr * momentum buffer
                bufs = [
                    optimizer.state.get(p, {}).get("momentum_buffer") for p in reading.ps.params
                ]
                u = None if any(b is None for b in bufs) else self.reducer.sq_norms(bufs)
        red = gather_layers(reading.layers, self.reducer)
        scales = [reading.grad_scale, reading.loss_scale, reading.found_inf]
        host: list[Any] = fetch([reading.g, reading.w, u, *scales, *red.values])  # the one transfer
        g, w, u = host[:3]
        _scales_on_host(reading, *host[3:6])
        numbers, changed = red.numbers(host[6:]), red.changed
        if reading.skipped:
            g = None  # the scaler found inf/NaN: these are not the gradients of a training step
        if plan is not None and reading.ps is not None:  # SGD: ||update|| = lr * ||g|| or ||buf||
            base = g[:, SUMSQ] if plan.kind == "grad" and g is not None else u
            u = None if base is None else plan.lr_sq * np.asarray(base)
        if reading.ps is not None:
            self._emit_params(step, reading, g, w, u, numbers, tier)
        elif not self.warned_empty:
            self.warned_empty = True
            warnings.warn(
                f"step {step}: no parameter has a gradient; call backward() before "
                "optimizer.step() (or monitor.step())",
                GradprobeWarning,
                stacklevel=4,
            )
        self._emit_layers(step, reading, numbers)
        return changed

    def _finish_fast(
        self, step: int, reading: Reading, optimizer: torch.optim.Optimizer | None, tier: str
    ) -> bool:
        """:meth:`finish` of a step read in place: the update norms go into its row too."""
        ps, slot, plan = reading.ps, reading.row, reading.plan
        assert ps is not None and slot is not None and ps.fast is not None
        last = slot.address + 40 * ps.fast.n  # the row's last part: see Slab
        how: Any = (FROM_ROW, None)
        if optimizer is None:
            how = (FROM_ROW, math.nan)
        elif plan is None:  # measured: ||W_after - W_before||^2 against the snapshot
            bufs = self._updates.taken()
            if bufs is None:
                how = (FROM_ROW, math.nan)
            elif not ps.fast.sq_dists(bufs, last):
                _fill(slot, fetch([self.reducer.sq_dists(bufs, ps.weights)])[0])
        elif plan.kind == "grad":  # SGD: ||update|| = lr * ||g||
            how = (FROM_GRAD, plan.lr_sq)
        else:  # the step was -lr * momentum buffer
            bufs = [optimizer.state.get(p, {}).get("momentum_buffer") for p in ps.params]
            if any(b is None for b in bufs):
                how = (FROM_ROW, math.nan)
            elif ps.fast.sq_norms(bufs, last):
                how = (FROM_ROW, plan.lr_sq)
            else:
                _fill(slot, np.asarray(fetch([self.reducer.sq_norms(bufs)])[0]))
                how = (FROM_ROW, plan.lr_sq)
        self.rows.commit(step, slot, how, tier)
        if not reading.layers:
            return False
        red = gather_layers(reading.layers, self.reducer)
        self._emit_layers(step, reading, red.numbers(fetch(red.values)))
        return red.changed

    def _emit_params(
        self,
        step: int,
        reading: Reading,
        g: np.ndarray | None,
        w: np.ndarray,
        u: np.ndarray | None,
        numbers: dict[str, LayerNumbers],
        tier: str,
    ) -> None:
        ps = reading.ps
        assert ps is not None
        n = len(ps.meta.numel)
        nonfinite: np.ndarray = ps.zeros  # shared by the steps' rows, never written
        if g is None:  # a skipped step: its gradients are not the ones of a training step
            g = np.full((n, 4), np.nan)
        else:
            if reading.grad_scale != 1.0:  # a fused optimizer under AMP: unscale
                s = reading.grad_scale
                g = g / np.array([s, s * s, s, 1.0])
            if ps.nonfinite is not None:  # counted across the ranks when it was read
                nonfinite = ps.nonfinite
            elif ps.entries is not None:
                pass
            elif not np.isfinite(g[:, : SUMSQ + 1]).all():  # a sum or sum of squares not finite
                suspect = ~np.isfinite(g[:, SUMSQ]) | ~np.isfinite(g[:, SUM])
                idx = np.flatnonzero(suspect)
                nonfinite = np.zeros(n, dtype=np.int64)
                nonfinite[idx] = nonfinite_counts([ps.params[i].grad for i in idx])  # type: ignore[misc]
        pe = ps.nans
        if self.per_example:
            pe_layer = np.array(
                [_pe(numbers.get(layer)) for layer in ps.meta.layers], dtype=np.float64
            )
            with np.errstate(invalid="ignore"):
                pe = np.where(ps.is_weight, np.sqrt(pe_layer), np.nan)
        u_arr = ps.nans if u is None or reading.skipped else np.asarray(u, dtype=np.float64)
        w_arr = np.asarray(w, dtype=np.float64)
        extra = {"skipped": True} if reading.skipped else {}
        self.rows.add_params(step, ps.meta, g, w_arr, u_arr, pe, nonfinite, tier=tier, **extra)

    def _emit_layers(self, step: int, reading: Reading, numbers: dict[str, LayerNumbers]) -> None:
        numbers = {k: v for k, v in numbers.items() if v.m is not None or v.bsq is not None}
        if not numbers:
            return
        names = sorted(numbers, key=self.order.depth)
        acts = tuple(reading.layers[nm].act if nm in reading.layers else None for nm in names)
        key = (tuple(names), acts, self.order.version)
        meta = self._layer_metas.get(key)
        if meta is None:
            meta = self._layer_metas[key] = LayerMeta(
                names=np.array(names, dtype=object),
                depth=np.array([self.order.depth(nm) for nm in names], dtype=np.int64),
                kinds=np.array([self.kinds.get(nm, "") for nm in names], dtype=object),
                acts=np.array([a.name if a else "" for a in acts], dtype=object),
                saturating=np.array([a is not None and a.family == "saturating" for a in acts]),
            )
        ds = [numbers[name] for name in names]
        m = np.array([_NAN4 if d.m is None else d.m for d in ds], dtype=np.float64)
        dead = np.array(  # the fraction of units no example made positive
            [
                1.0 - np.count_nonzero(d.alive) / d.alive.size
                if d.alive is not None and d.alive.size
                else math.nan
                for d in ds
            ],
            dtype=np.float64,
        )
        scale = reading.loss_scale**2
        bsq = np.array(
            [math.nan if d.bsq is None or reading.skipped else d.bsq / scale for d in ds],
            dtype=np.float64,
        )
        extra = {"skipped": True} if reading.skipped else {}
        self.rows.add_layers(step, meta, m, dead, bsq, **extra)

    def clear(self) -> None:
        self._updates.clear()


_NAN4 = (math.nan,) * 4  # an output not measured


def _fill(slot: Slot, values: Any) -> None:
    """Write ``values`` (n,) into the last part of ``slot``'s row (see :class:`Slab`)."""
    slot.slab.data[slot.i, 5 * slot.slab.n :] = values


def _pe(n: LayerNumbers | None) -> float:
    return math.nan if n is None or n.pe is None else n.pe
