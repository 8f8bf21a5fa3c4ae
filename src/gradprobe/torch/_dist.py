"""Where each trainable parameter's numbers live, and how to add them up: exact global
per-parameter statistics on one process, under DDP, FSDP1 and FSDP2.

A :class:`ParamLayout` has one *entry* per original parameter (layer, name, global numel) and
one *piece* per plain dense local tensor that holds part of an entry on this rank. A caller
reduces every piece to a few numbers (a row each: sums, sums of squares, maxima, ...), and
:meth:`ParamLayout.merge` turns the per-piece rows into per-entry rows that are the same on
every rank: pieces of one entry are added (or maxed) together, then one ``all_reduce`` per kind
of operation adds (or maxes) the entries across the process group::

    lay = layout(model, trainable)
    grads = lay.local_grads()                  # plain tensors, one per piece
    rows = lay.merge(per_piece_rows, "ssm")    # (n_entries, 3): sum, sum of squares, max |x|

- Plain model, DDP: a piece is the parameter itself (DDP has already averaged the gradients
  over the ranks, and the weights are replicated), so merge is the identity (``trivial``).
- FSDP1 (``FullyShardedDataParallel``, ``use_orig_params`` True or False): each original
  parameter is a slice of the rank's shard of a ``FlatParameter``; the flat parameter's shard
  metadata (``_shard_param_infos``) says which slice. Entries are the original parameters.
- FSDP2 (``fully_shard``) and other DTensor parameters: a piece is the local shard
  (``to_local()``); a rank that holds a replica (a ``Replicate`` mesh dimension where its
  coordinate is not 0) has no piece, so replicas are counted once.

Pieces hold only elements this rank is responsible for, never padding, never an empty tensor.
``merge`` on a distributed layout is a collective: every rank of the default process group
calls it, in the same order, with the same ``ops``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from gradprobe.errors import UsageError
from gradprobe.torch._structure import ROOT, clean_path


@dataclass(frozen=True)
class _Piece:
    """A part of entry ``entry`` held on this rank: elements ``[start, start + numel)`` of the
    flattened local tensor of ``source`` (``start`` is None: the whole local tensor)."""

    entry: int
    source: _Source
    start: int | None = None
    numel: int = 0


class _Source:
    """A tensor the optimizer updates, and how to read its local data and gradient."""

    def __init__(self, param: torch.Tensor) -> None:
        self.param = param

    def weight(self) -> torch.Tensor:
        return self.param.detach()

    def grad(self) -> torch.Tensor | None:
        return _dense(self.param.grad)

    def has_grad(self) -> bool:
        """Whether the parameter has a gradient (also when this rank holds none of it)."""
        return self.param.grad is not None


def _dense(g: torch.Tensor | None) -> torch.Tensor | None:
    """A gradient as a dense tensor (sparse gradients, e.g. of ``Embedding(sparse=True)``, are
    made dense: a copy)."""
    if g is None:
        return None
    g = g.detach()
    return g if g.layout == torch.strided else g.to_dense()


class _DTensorSource(_Source):
    """A DTensor parameter (FSDP2): its local shard; a gradient with other placements than
    the parameter (e.g. ``Partial``) is redistributed to the parameter's first (a collective)."""

    def weight(self) -> torch.Tensor:
        with torch.no_grad():
            p: Any = self.param
            return p.to_local().detach()

    def grad(self) -> torch.Tensor | None:
        g: Any = self.param.grad
        if g is None:
            return None
        p: Any = self.param
        with torch.no_grad():
            if tuple(g.placements) != tuple(p.placements):
                g = g.redistribute(p.device_mesh, p.placements)
            local: torch.Tensor = g.to_local().detach()
            return local


class _FlatSource(_Source):
    """An FSDP1 ``FlatParameter``: the rank's (padded) shard of the concatenated parameters."""

    def __init__(self, handle: Any) -> None:
        super().__init__(handle.flat_param)
        self.handle = handle

    def weight(self) -> torch.Tensor:
        flat = self.handle.flat_param
        local = getattr(flat, "_local_shard", None)
        if local is None or (self.handle.uses_sharded_strategy and self.handle.is_sharded(flat)):
            local = flat
        out: torch.Tensor = local.detach()
        return out

    def grad(self) -> torch.Tensor | None:
        g = self.handle.flat_param.grad
        return None if g is None else g.detach()


class _OrigSource(_Source):
    """An original parameter of an FSDP1 module with ``use_orig_params=True``: the optimizer
    updates it, and outside forward/backward its data and gradient are flat 1-D views of its
    slice ``[start, start + numel)`` of the flat parameter's local shard (of its gradient).

    The gradient is the parameter's own ``.grad`` (what the optimizer applies: None after
    ``zero_grad()``, even though the flat gradient is only freed at the next forward); the
    weights are read from the flat shard, which is right also while the views are unsharded."""

    def __init__(self, flat: _FlatSource, param: torch.Tensor, start: int, numel: int) -> None:
        super().__init__(param)
        self.flat, self.start, self.numel = flat, start, numel

    def weight(self) -> torch.Tensor:
        return self.flat.weight()[self.start : self.start + self.numel]

    def grad(self) -> torch.Tensor | None:
        g = self.param.grad
        if g is None:
            return None
        if g.numel() == self.numel:
            return g.detach().reshape(-1)
        flat = self.flat.grad()  # the views are unsharded: read the sharded gradient
        return None if flat is None else flat[self.start : self.start + self.numel]

    def has_grad(self) -> bool:
        if self.numel:
            return self.param.grad is not None
        fp = self.flat.handle.flat_param  # no part here: any part of the flat parameter's
        return any(q.grad is not None for q in fp._params) or (  # views, else the flat grad
            fp.grad is not None and all(q.numel() == 0 for q in fp._params)
        )


@dataclass
class ParamLayout:
    """Entries (original parameters) and the local pieces that hold them; see the module doc."""

    entries: list[tuple[str, str, int]]
    params: list[torch.Tensor]
    distributed: bool = False
    rank: int = 0
    trivial: bool = True
    _pieces: list[_Piece] | None = None
    _group: Any = None  # the process group of merge (None: the default group)
    _sources: dict[int, _Source] | None = None  # entry -> the tensor that holds it
    # set by local_grads(): per entry, whether its parameter has a gradient
    grad_present: np.ndarray | None = None

    def __post_init__(self) -> None:
        pieces = self._pieces or []
        entry_of = np.fromiter((p.entry for p in pieces), dtype=np.int64, count=len(pieces))
        if len(entry_of) and np.any(np.diff(entry_of) < 0):
            raise AssertionError("pieces must be ordered by entry")
        first = np.flatnonzero(np.diff(entry_of, prepend=-1)) if len(entry_of) else entry_of
        self._starts = first  # index of the first piece of each entry that has pieces
        self._with_pieces = entry_of[first]  # those entries
        self.piece_entry = entry_of
        self._pieceless = sorted(set(range(len(self.entries))) - set(entry_of.tolist()))
        # a plain trivial layout (no sharding): the pieces are the parameters themselves
        self._plain = (
            self.trivial
            and len(pieces) == len(self.params)
            and all(
                type(p.source) is _Source and p.source.param is q
                for p, q in zip(pieces, self.params, strict=True)
            )
        )
        self._all_present = np.ones(len(self.entries), dtype=bool)
        self._weights: list[torch.Tensor] = []

    @property
    def n_pieces(self) -> int:
        return len(self._pieces or [])

    # ------------------------------------------------------------------ reads
    def local_grads(self) -> list[torch.Tensor] | None:
        """One plain dense tensor per piece: the part of the gradient this rank holds (views,
        no copy); None when no parameter has a gradient. A piece whose parameter has no
        gradient (while others have) reads as zeros, and ``grad_present`` is False for its
        entry."""
        if self._plain:
            grads = [p.grad for p in self.params]
            if all(g is not None and g.layout == torch.strided for g in grads):
                self.grad_present = self._all_present
                return grads  # type: ignore[return-value]
        pieces = self._pieces or []
        full: dict[int, torch.Tensor | None] = {}
        out: list[torch.Tensor] = []
        present = np.zeros(len(self.entries), dtype=bool)
        for piece in pieces:
            key = id(piece.source)
            if key not in full:
                full[key] = piece.source.grad()
            g = full[key]
            if g is None:
                out.append(torch.zeros_like(self._slice(piece, piece.source.weight())))
            else:
                present[piece.entry] = True
                out.append(self._slice(piece, g))
        sources = self._sources or {}
        for i in self._pieceless:  # entries held on other ranks only
            present[i] = sources[i].has_grad()
        self.grad_present = present
        if not present.any():
            return None
        return out

    def local_weights(self) -> list[torch.Tensor]:
        """One plain dense tensor per piece: the part of the weights this rank holds (views)."""
        if self._plain:
            return self._plain_weights()
        full: dict[int, torch.Tensor] = {}
        out = []
        for piece in self._pieces or []:
            key = id(piece.source)
            if key not in full:
                full[key] = piece.source.weight()
            out.append(self._slice(piece, full[key]))
        return out

    def _plain_weights(self) -> list[torch.Tensor]:
        """Detached views of the parameters, made once and remade for a parameter whose data
        was replaced (``p.data = ...``, ``model.to(...)``)."""
        views = self._weights
        if len(views) != len(self.params):
            views[:] = [p.detach() for p in self.params]
        stale = [
            i
            for i, (v, p) in enumerate(zip(views, self.params, strict=True))
            if v.data_ptr() != p.data_ptr()
        ]
        for i in stale:
            views[i] = self.params[i].detach()
        return list(views)

    @staticmethod
    def _slice(piece: _Piece, t: torch.Tensor) -> torch.Tensor:
        if piece.start is None:
            return t
        return t.reshape(-1)[piece.start : piece.start + piece.numel]

    # ------------------------------------------------------------------ merge
    def merge(self, per_piece: np.ndarray, ops: str) -> np.ndarray:
        """Per-piece rows ``(n_pieces, k)`` -> per-entry rows ``(n_entries, k)``, the same on
        every rank. Column ``j`` is added (``ops[j] == "s"``) or maxed (``"m"``) over the
        entry's pieces on this rank, then over the ranks. An entry with no piece anywhere
        has sums 0 and maxima -inf; a NaN maximum stays NaN."""
        rows = np.asarray(per_piece, dtype=np.float64)
        if rows.ndim != 2 or rows.shape != (self.n_pieces, len(ops)):
            raise UsageError(
                f"merge: expected per-piece rows of shape ({self.n_pieces}, {len(ops)}), "
                f"got {rows.shape}; fix: one row per piece of local_grads()/local_weights()"
            )
        bad = set(ops) - {"s", "m"}
        if bad:
            raise UsageError(f"merge: expected ops of 's' (sum) and 'm' (max), got {ops!r}")
        if self.trivial:
            return rows
        s = np.array([c == "s" for c in ops])
        out = np.where(s, 0.0, -np.inf) * np.ones((len(self.entries), 1))
        if len(rows):
            out[np.ix_(self._with_pieces, s)] = np.add.reduceat(rows[:, s], self._starts, axis=0)
            out[np.ix_(self._with_pieces, ~s)] = np.maximum.reduceat(
                rows[:, ~s], self._starts, axis=0
            )
        if self.distributed:
            out = _all_reduce(out, s, self._group)
        return out


def _all_reduce(out: np.ndarray, s: np.ndarray, group: Any) -> np.ndarray:
    """Add the sum columns and max the max columns of ``out`` over ``group`` (float64; one
    ``all_reduce`` per kind). NaN maxima are carried as a count in the sum reduction."""
    import torch.distributed as dist

    device = torch.device("cpu")
    if "nccl" in str(dist.get_backend(group)):
        device = torch.device("cuda", torch.cuda.current_device())
    m = out[:, ~s]
    nan = np.isnan(m)
    if s.any() or nan.size:
        both = torch.from_numpy(np.concatenate([out[:, s], nan.astype(np.float64)], axis=1))
        both = both.to(device)
        dist.all_reduce(both, op=dist.ReduceOp.SUM, group=group)
        summed = both.cpu().numpy()
        out[:, s] = summed[:, : int(s.sum())]
        nan = summed[:, int(s.sum()) :] > 0
    if (~s).any():
        mt = torch.from_numpy(np.where(np.isnan(m), -np.inf, m)).to(device)
        dist.all_reduce(mt, op=dist.ReduceOp.MAX, group=group)
        out[:, ~s] = np.where(nan, np.nan, mt.cpu().numpy())
    return out


def agree_min(values: tuple[float, float]) -> tuple[float, float]:
    """The smallest of each value over the ranks of the default process group (one float64
    ``all_reduce``; a collective: every rank calls it at the same step). The overhead budget
    agrees its shares of recorded steps this way, so every rank records the same steps."""
    import torch.distributed as dist

    device = torch.device("cpu")
    if "nccl" in str(dist.get_backend()):
        device = torch.device("cuda", torch.cuda.current_device())
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    a, b = t.cpu().tolist()
    return float(a), float(b)


def distributed() -> bool:
    """Whether the default process group is up (more than one process may be watching)."""
    return _dist_state()[0]


# ---------------------------------------------------------------------- building a layout
def _dist_state() -> tuple[bool, int, int]:
    """(initialized, rank, world size) of the default process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return True, dist.get_rank(), dist.get_world_size()
    return False, 0, 1


def layout(model: nn.Module, trainable: list[tuple[str, str, torch.Tensor]]) -> ParamLayout:
    """The layout of ``trainable`` (layer, param name, tensor) in ``model`` on this rank.

    Plain parameters keep their names and order; the tensors of FSDP1 flat parameters and
    DTensors are replaced by their original parameters with global sizes, in model order."""
    initialized, rank, world = _dist_state()
    trainable = _without_ddp_prefix(model, trainable)
    fsdp1 = _fsdp1_handles(model)
    if not fsdp1 and not any(_is_dtensor(t) for _, _, t in trainable):
        return _trivial(trainable, initialized, rank)
    return _Builder(model, trainable, fsdp1, rank, world, initialized).build()


def _without_ddp_prefix(
    model: nn.Module, trainable: list[tuple[str, str, torch.Tensor]]
) -> list[tuple[str, str, torch.Tensor]]:
    """Under DDP, layer paths relative to the wrapped module (``module.0`` -> ``0``), unless
    the caller already gave them so."""
    if not isinstance(model, nn.parallel.DistributedDataParallel):
        return trainable
    inner = {path for path, _ in model.module.named_modules()}
    out = []
    for layer, name, t in trainable:
        if layer == "module":
            layer = ROOT
        elif layer.startswith("module.") and layer[len("module.") :] in inner:
            layer = layer[len("module.") :]
        out.append((layer, name, t))
    return out


def _trivial(
    trainable: list[tuple[str, str, torch.Tensor]], dist_on: bool, rank: int
) -> ParamLayout:
    entries = [(layer, name, t.numel()) for layer, name, t in trainable]
    params = [t for _, _, t in trainable]
    pieces = [_Piece(i, _Source(t)) for i, t in enumerate(params)]
    return ParamLayout(entries, params, dist_on, rank, True, pieces)


def _is_dtensor(t: torch.Tensor) -> bool:
    if "torch.distributed.tensor" not in sys.modules:  # no DTensor without it (and its import
        return False  # costs 0.3 s: sympy)
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed
        return False
    return isinstance(t, DTensor)


def _fsdp1_handles(model: nn.Module) -> list[Any]:
    """The flat-parameter handles of every FSDP1 module in ``model``."""
    if "torch.distributed.fsdp" not in sys.modules:  # no FSDP module without it
        return []
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    except ImportError:  # pragma: no cover - torch without distributed
        return []
    handles = []
    for m in model.modules():
        h = getattr(m, "_handle", None) if isinstance(m, FSDP) else None
        if h is not None and h.flat_param is not None:
            h._gradprobe_replica_group = getattr(m, "_inter_node_pg", None)
            handles.append(h)
    return handles


class _Builder:
    """Walks the model once, in module order, emitting entries and this rank's pieces."""

    def __init__(
        self,
        model: nn.Module,
        trainable: list[tuple[str, str, torch.Tensor]],
        handles: list[Any],
        rank: int,
        world: int,
        initialized: bool,
    ) -> None:
        self.model, self.trainable = model, trainable
        self.rank, self.world, self.initialized = rank, world, initialized
        self.entries: list[tuple[str, str, int]] = []
        self.params: list[torch.Tensor] = []
        self.pieces: list[_Piece] = []
        self.entry_source: dict[int, _Source] = {}
        self.handles = handles
        self.flat_of_module: dict[int, list[tuple[Any, int]]] = {}  # module -> (handle, index)
        self.managed: set[int] = set()  # ids of tensors owned by FSDP1 handles
        for h in handles:
            fp = h.flat_param
            self.managed.add(id(fp))
            for t in (fp._params or []) + (fp._shared_params or []):
                self.managed.add(id(t))
            for i, info in enumerate(fp._param_infos):
                self.flat_of_module.setdefault(id(info.module), []).append((h, i))
        self.sources: dict[int, _Source] = {}

    def build(self) -> ParamLayout:
        names = {id(t): (layer, name) for layer, name, t in self.trainable}
        seen: set[int] = set()
        for path, module in self.model.named_modules():
            for h, i in self.flat_of_module.get(id(module), []):
                self._flat_entry(path, h, i)
            for _, p in module.named_parameters(recurse=False):
                if id(p) in self.managed or id(p) not in names or id(p) in seen:
                    continue
                seen.add(id(p))
                self._plain_entry(*names[id(p)], p)
        for layer, name, t in self.trainable:  # tensors outside the model's modules
            if id(t) not in self.managed and id(t) not in seen:
                seen.add(id(t))
                self._plain_entry(layer, name, t)
        trivial = (self.world == 1 or not self.initialized) and len(self.pieces) == len(
            self.entries
        )
        return ParamLayout(
            self.entries,
            self.params,
            self.initialized,
            self.rank,
            trivial,
            self.pieces,
            _sources=self.entry_source,
        )

    def _source(self, key: torch.Tensor, make: Any) -> _Source:
        if id(key) not in self.sources:
            self.sources[id(key)] = make()
        return self.sources[id(key)]

    def _plain_entry(self, layer: str, name: str, p: torch.Tensor) -> None:
        e = len(self.entries)
        self.entries.append((layer, name, p.numel()))
        self.params.append(p)
        if _is_dtensor(p):
            src = self._source(p, lambda: _DTensorSource(p))
            self.entry_source[e] = src
            local = src.weight()
            if local.numel() and _counted_dtensor(p):
                self.pieces.append(_Piece(e, src))
        else:
            src = self._source(p, lambda: _Source(p))
            self.entry_source[e] = src
            if self.rank == 0 or not self.initialized:  # replicated: counted once
                self.pieces.append(_Piece(e, src))

    def _flat_entry(self, path: str, handle: Any, i: int) -> None:
        fp = handle.flat_param
        info = fp._param_infos[i]
        orig = fp._params[i] if fp._params is not None else None
        requires = orig.requires_grad if orig is not None else fp.requires_grad
        if not requires:
            return
        e = len(self.entries)
        self.entries.append((clean_path(path), info.param_name, int(fp._numels[i])))
        if orig is not None:
            self.params.append(orig)
        elif all(q is not fp for q in self.params):
            self.params.append(fp)
        flat = self._source(fp, lambda: _FlatSource(handle))
        assert isinstance(flat, _FlatSource)
        shard = fp._shard_param_infos[i]
        start, numel = (shard.offset_in_shard, shard.numel_in_shard) if shard.in_shard else (0, 0)
        if orig is None:
            src: _Source = flat
            piece = _Piece(e, flat, start, numel)
        else:
            src = _OrigSource(flat, orig, start, numel)
            piece = _Piece(e, src)
        self.entry_source[e] = src
        if numel and _counted_flat(handle):
            self.pieces.append(piece)


def _counted_flat(handle: Any) -> bool:
    """Whether this rank's shard of ``handle`` counts. Replicas count once: an unsharded flat
    parameter (NO_SHARD, or a shard group of one) only on rank 0 of its group, and under
    hybrid sharding only in the first replica (rank 0 of the replica group)."""
    import torch.distributed as dist

    if not handle.uses_sharded_strategy and dist.get_rank(handle.process_group) != 0:
        return False
    replicas = handle._gradprobe_replica_group  # set only by hybrid sharding
    return replicas is None or bool(dist.get_rank(replicas) == 0)


def _counted_dtensor(p: Any) -> bool:
    """Whether this rank's local shard of DTensor ``p`` counts: on every mesh dimension that
    does not shard it, only coordinate 0 counts."""
    coord = p.device_mesh.get_coordinate()
    if coord is None:
        return False
    return all(pl.is_shard() or c == 0 for pl, c in zip(p.placements, coord, strict=True))
