"""The PyTorch monitor: one line to watch a model's gradients, activations and backward signal.

Hooks capture; pure reductions (:mod:`gradprobe.torch._reduce`) turn tensors into a few numbers
where they live; the step's numbers cross to the host once and become rows of the two record tables
(:mod:`gradprobe.records`). Nothing here changes a tensor of the model.

When each number is read:

- gradients in the optimizer's step *pre*-hook: after the last backward, before the update, so
  gradient accumulation, clipping and AMP unscaling are seen as applied (or in
  :meth:`Monitor.step` when no optimizer is given);
- the update ``W_after - W_before`` in the step *post*-hook;
- activations and the backward signal ``dL/dh`` during the forward and backward passes of a
  recorded step only: on other steps (``every > 1``) no module hook is registered at all.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.hooks import RemovableHandle

from gradprobe.errors import CaptureError, GradprobeWarning, UsageError
from gradprobe.records import TABLES, RecordBuffer
from gradprobe.torch import _reduce as R
from gradprobe.torch._activations import FUNCTIONS, MODULES, Activation
from gradprobe.torch._rows import LayerMeta, ParamMeta, PendingRows

ROOT = "(root)"


@dataclass
class _Layer:
    """What one recorded step gathered for one layer that owns parameters."""

    act: Activation | None = None
    unit_dim: int = -1
    outs: list[tuple[torch.Tensor, int]] = field(default_factory=list)  # small: reduced at step
    parts: list[tuple[Any, Any]] = field(default_factory=list)  # large ones: reduced at once
    grads: list[torch.Tensor] = field(default_factory=list)  # small dL/dh: reduced at the step
    gnorms: list[Any] = field(default_factory=list)  # large ones: their norms
    x_rows: list[Any] = field(default_factory=list)
    d_rows: list[Any] = field(default_factory=list)
    pending: torch.Tensor | None = None  # output waiting to see whether an activation follows
    # numbers already on the host: CPU tensors reduced by the fused pass as they were produced
    m: tuple[float, ...] | None = None  # summed output moments: sum, sum of squares, count,
    # saturated count
    alive: np.ndarray | None = None  # units positive for some example
    bsq: float | None = None  # ||dL/dh||^2

    def add_output(self, row: tuple[float, float, float, float], alive: Any) -> None:
        self.m = row if self.m is None else tuple(a + b for a, b in zip(self.m, row, strict=True))
        if alive is not None:
            self.alive = alive if self.alive is None else (self.alive | alive)


@dataclass
class _ParamSet:
    """What stays the same from step to step about the parameters that have gradients."""

    meta: ParamMeta  # layer, name, depth and size of each parameter
    is_weight: np.ndarray
    views: _GradViews
    order_size: int
    zeros: np.ndarray  # read-only fillers for the rows: no non-finite value, no number
    nans: np.ndarray

    @classmethod
    def build(cls, mon: Monitor, have: tuple[int, ...]) -> _ParamSet:
        chosen = [mon._params[i] for i in have]
        params = [p for _, _, p in chosen]
        meta = ParamMeta(
            layers=np.array([layer for layer, _, _ in chosen], dtype=object),
            pnames=np.array([pn for _, pn, _ in chosen], dtype=object),
            depth=np.array([mon._depth(layer) for layer, _, _ in chosen], dtype=np.int64),
            numel=np.array([p.numel() for p in params], dtype=np.int64),
        )
        return cls(
            meta=meta,
            is_weight=np.array([pn == "weight" for _, pn, _ in chosen]),
            views=_GradViews(params),
            order_size=len(mon._order),
            zeros=_read_only(np.zeros(len(params), dtype=np.int64)),
            nans=_read_only(np.full(len(params), np.nan)),
        )


class _GradViews(R.ParamViews):
    """Parameter views that also hand out the parameters themselves, to read ``.grad``."""

    def __init__(self, params: list[torch.Tensor]) -> None:
        super().__init__(params)
        self._params = params

    def params(self) -> list[torch.Tensor]:
        return self._params


class _FunctionalActivations(TorchFunctionMode):
    """Sees functional activations (``F.relu(x)``, ``x.sigmoid()``) during a recorded forward."""

    def __init__(self, monitor: Monitor) -> None:
        super().__init__()
        self.monitor = monitor

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def,unused-ignore]
        out = func(*args, **(kwargs or {}))
        act = FUNCTIONS.get(func)
        if act is not None:
            self.monitor._on_functional(act, out)
        return out


class Monitor:
    """Records per-layer gradient, activation and backward-signal statistics of a model.

    Create it with :func:`watch`. Use it as a context manager, or call :meth:`detach` when done;
    after detaching, the model behaves bit for bit as if it had never been watched.

    Example::

        >>> import torch, gradprobe
        >>> nn = torch.nn
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> with gradprobe.watch(model, opt) as mon:
        ...     for _ in range(3):
        ...         opt.zero_grad()
        ...         model(torch.randn(16, 4)).pow(2).mean().backward()
        ...         opt.step()
        >>> mon.to_pandas()[["step", "layer", "param", "depth"]].head(2).values.tolist()
        [[0, '0', 'weight', 0], [0, '0', 'bias', 0]]
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        every: int = 1,
        activations: bool = True,
        backward: bool = True,
        per_example: bool = False,
        log_dir: str | Path | None = None,
        max_rows_in_memory: int = 100_000,
    ) -> None:
        if isinstance(model, type):
            raise CaptureError(
                f"watch() expects a model instance, got the class {model.__name__}: "
                f"instantiate it first (watch({model.__name__}(...), optimizer))"
            )
        if not isinstance(model, nn.Module):
            raise CaptureError(
                f"watch() expects a torch.nn.Module, got {type(model).__name__}; "
                "pass the model itself (e.g. watch(model, optimizer))"
            )
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise CaptureError(
                f"watch() expects a torch.optim.Optimizer as optimizer, got "
                f"{type(optimizer).__name__}"
            )
        if not isinstance(every, int) or every < 1:
            raise UsageError(f"every must be a whole number >= 1, got {every!r}")
        self.model, self.optimizer, self.every = model, optimizer, every
        self.activations, self.backward, self.per_example = activations, backward, per_example
        folder = Path(log_dir) if log_dir is not None else None
        self._buffers = {t: RecordBuffer(t, folder, max_rows_in_memory) for t in TABLES}
        self._rows = PendingRows(self._buffers["params"], self._buffers["layers"])
        self._layer_metas: dict[tuple[Any, ...], LayerMeta] = {}
        self._params, self._owner_names = self._trainable(model)
        if not self._params:
            raise CaptureError(
                f"{type(model).__name__} has no trainable parameters (requires_grad=True): "
                "nothing to watch"
            )
        self._act_modules = {m: MODULES[type(m)] for m in model.modules() if type(m) in MODULES}
        self._kinds = {name: type(m).__name__ for m, name in self._owner_names.items()}
        self._conv = {name for name, kind in self._kinds.items() if kind.startswith("Conv")}
        self._backward_hooks = {
            name: partial(self._on_backward, name) for name in self._owner_names.values()
        }
        self._order: dict[str, int] = {}
        self._step = 0
        self._layers: dict[str, _Layer] = {}
        self._last: str | None = None
        self._in_act_module = 0
        self._functional: bool | None = None  # None: not known yet; found on the first forward
        self._mode: _FunctionalActivations | None = None
        self._updates = R.UpdateMeter()
        self._sgd: _SgdPlan | None = None
        self._plan_key: tuple[Any, ...] | None = None
        self._plan: _SgdPlan | None = None
        self._param_sets: dict[tuple[int, ...], _ParamSet] = {}
        self._current: _ParamSet | None = None
        self._collector = R.Collector()
        self._persistent: list[RemovableHandle] = []
        self._armed: list[RemovableHandle] = []
        self._attached = True
        self._warned_empty = False
        self._eager = False  # True once a model changed a kept output in place
        if optimizer is not None:
            self._persistent.append(optimizer.register_step_pre_hook(self._before_update))
            self._persistent.append(optimizer.register_step_post_hook(self._after_update))
        self._arm()

    # ------------------------------------------------------------------ public
    @property
    def steps_seen(self) -> int:
        """How many steps (optimizer steps, or calls of :meth:`step`) the monitor has seen."""
        return self._step

    def step(self) -> None:
        """Record the gradients now (call after ``backward``) when no optimizer was given."""
        if self.optimizer is not None:
            raise UsageError(
                "this monitor reads gradients in the optimizer's step hooks; "
                "do not call monitor.step() as well (or watch without the optimizer)"
            )
        if self._recording():
            ps = self._read_grads()
            if ps is not None:
                self._collector.put("w", ps.views.sq_norms())
            self._finish(updates=None)
        self._advance()

    def to_pandas(self, table: str = "params") -> pd.DataFrame:
        """The records as one tidy long table: ``params`` (default) or ``layers``.

        See :mod:`gradprobe.records` for the columns.
        """
        if table not in TABLES:
            raise UsageError(f"unknown table {table!r}: expected one of {', '.join(TABLES)}")
        self._rows.materialize()
        return self._buffers[table].to_pandas()

    def flush(self) -> None:
        """Write the records held in memory to ``log_dir`` (no-op without one)."""
        self._rows.materialize()
        for buf in self._buffers.values():
            buf.flush()

    def detach(self) -> None:
        """Remove every hook this monitor added; records stay readable."""
        self._disarm()
        self._rows.materialize()
        for h in self._persistent:
            h.remove()
        self._persistent.clear()
        self._layers.clear()
        self._updates.clear()
        self._attached = False

    @property
    def attached(self) -> bool:
        return self._attached

    def _repr_html_(self) -> str:
        """A compact summary and the findings, for notebooks."""
        from gradprobe.views.notebook import summary_html

        return summary_html(self)

    def plot(self) -> list[Any]:
        """The per-layer charts as matplotlib figures."""
        from gradprobe.views.notebook import plot

        return plot(self)

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def __repr__(self) -> str:
        return (
            f"Monitor({type(self.model).__name__}, every={self.every}, "
            f"steps_seen={self._step}, "
            f"rows={len(self._buffers['params']) + self._rows.pending_params()})"
        )

    # ------------------------------------------------------------- structure
    @staticmethod
    def _trainable(
        model: nn.Module,
    ) -> tuple[list[tuple[str, str, torch.Tensor]], dict[nn.Module, str]]:
        """(layer, param name, tensor) of each trainable parameter (shared ones once), and the
        path of every module that owns parameters, trainable or frozen."""
        params: list[tuple[str, str, torch.Tensor]] = []
        owners: dict[nn.Module, str] = {}
        seen: set[int] = set()
        for path, module in model.named_modules():
            for pname, p in module.named_parameters(recurse=False):
                owners.setdefault(module, path or ROOT)  # frozen layers still show their signal
                if not p.requires_grad or id(p) in seen or p.numel() == 0:
                    continue
                seen.add(id(p))
                params.append((path or ROOT, pname, p))
        return params, owners

    def _depth(self, layer: str) -> int:
        if layer not in self._order:
            self._order[layer] = len(self._order)
        return self._order[layer]

    # --------------------------------------------------------------- arming
    def _recording(self) -> bool:
        return self._step % self.every == 0

    def _arm(self) -> None:
        if self._armed or not self._attached:
            return
        if not (self.activations or self.backward or self.per_example or not self._order):
            return
        for module, name in self._owner_names.items():
            self._armed.append(module.register_forward_hook(partial(self._on_layer, name)))
        if self.activations:
            # the pre-hooks only tell functional calls inside nn.ReLU & co from the user's own
            counted = self._functional is not False
            for module, act in self._act_modules.items():
                if counted:
                    self._armed.append(module.register_forward_pre_hook(self._enter_act_module))
                self._armed.append(
                    module.register_forward_hook(partial(self._on_act_module, act, counted))
                )
            if counted:
                self._armed.append(self.model.register_forward_pre_hook(self._push_mode))
                self._armed.append(
                    self.model.register_forward_hook(self._pop_mode, always_call=True)
                )
        self._armed.append(self.model.register_forward_hook(self._end_forward, always_call=True))

    def _disarm(self) -> None:
        for h in self._armed:
            h.remove()
        self._armed.clear()
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self._mode = None

    # ---------------------------------------------------------- forward hooks
    def _layer(self, name: str) -> _Layer:
        acc = self._layers.get(name)
        if acc is None:
            acc = self._layers[name] = _Layer()
        return acc

    def _on_layer(self, name: str, module: nn.Module, inputs: tuple, output: Any) -> None:
        self._depth(name)
        self._resolve_pending()
        self._last = name
        if not isinstance(output, torch.Tensor) or not output.is_floating_point():
            return
        acc = self._layer(name)
        if self.activations:
            acc.pending = output
        if output.requires_grad and (self.backward or self.per_example):
            output.register_hook(self._backward_hooks[name])
        if self.per_example and isinstance(module, nn.Linear) and output.ndim == 2:
            acc.x_rows.append(R.row_sq_norms(inputs[0]))

    def _resolve_pending(self) -> None:
        """The previous layer's output had no activation after it: measure the output itself."""
        if self._last is None:
            return
        acc = self._layers.get(self._last)
        if acc is not None and acc.pending is not None:
            self._measure(acc, acc.pending, None)
            acc.pending = None

    def _measure(self, acc: _Layer, out: torch.Tensor, act: Activation | None) -> None:
        """Keep a small output for the step's batched reduction; reduce a large one now."""
        acc.unit_dim = 1 if out.ndim > 2 and self._last in self._conv else -1
        now = R.output_stats_now(out, act, acc.unit_dim)
        if now is not None:  # a CPU tensor, read while still in cache
            acc.add_output(*now)
            return
        out = out.detach()
        if out.numel() <= R.DEFER and not self._eager:
            acc.outs.append((out, out._version))
        else:
            acc.parts.append(R.output_stats([out], act, acc.unit_dim))

    def _on_activation(self, act: Activation, out: Any) -> None:
        if self._last is None or not isinstance(out, torch.Tensor):
            return
        acc = self._layers.get(self._last)
        if acc is None or acc.pending is None:
            return  # a second activation after the same layer: the first one counts
        acc.pending = None
        if acc.act is None:
            acc.act = act
        self._measure(acc, out, act)

    def _enter_act_module(self, module: nn.Module, inputs: tuple) -> None:
        self._in_act_module += 1

    def _on_act_module(
        self, act: Activation, counted: bool, module: nn.Module, inputs: tuple, out: Any
    ) -> None:
        if counted:
            self._in_act_module -= 1
        self._on_activation(act, out)

    def _on_functional(self, act: Activation, out: Any) -> None:
        if self._in_act_module:
            return  # inside nn.ReLU & co: the module hook records it
        self._functional = True
        self._on_activation(act, out)

    def _push_mode(self, module: nn.Module, inputs: tuple) -> None:
        if self._mode is None:
            self._mode = _FunctionalActivations(self)
            self._mode.__enter__()

    def _pop_mode(self, module: nn.Module, inputs: tuple, output: Any) -> None:
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self._mode = None
            if self._functional is None:
                self._functional = False
                # no functional activation in this model: stop intercepting torch calls
                self._disarm()
                self._arm()

    def _end_forward(self, module: nn.Module, inputs: tuple, output: Any) -> None:
        self._resolve_pending()
        self._last = None
        if not (self.activations or self.backward or self.per_example):
            self._disarm()  # gradients only: the layer hooks were there to learn the depth order

    # --------------------------------------------------------- backward hook
    def _on_backward(self, name: str, grad: torch.Tensor) -> None:
        acc = self._layer(name)
        if self.backward:
            sq = R.sq_norm_now(grad)
            if sq is not None:  # a CPU tensor, read while still in cache
                acc.bsq = sq if acc.bsq is None else acc.bsq + sq
            elif grad.numel() <= R.DEFER:
                acc.grads.append(grad)
            else:
                acc.gnorms.append(R.norms([grad]))
        if self.per_example and acc.x_rows and grad.ndim == 2:
            acc.d_rows.append(R.row_sq_norms(grad))

    # ------------------------------------------------------- optimizer hooks
    def _before_update(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._sgd = None
        if self._recording():
            ps = self._read_grads()
            if ps is None:
                return
            self._sgd = self._plan_for(optimizer, ps)
            if self._sgd is None:
                self._collector.put("w", self._updates.before(ps.views))
            else:
                self._collector.put("w", ps.views.sq_norms())

    def _plan_for(self, optimizer: torch.optim.Optimizer, ps: _ParamSet) -> _SgdPlan | None:
        """:func:`_sgd_plan`, made again only when the groups' settings or the parameters change."""
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
            self._plan_key, self._plan = key, _sgd_plan(optimizer, ps.views.params())
        return self._plan

    def _after_update(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._recording():
            plan = self._sgd
            if plan is None:
                self._finish(self._updates.after())
            elif plan.kind == "grad":
                self._finish(None)
            else:  # the step was -lr * momentum buffer
                params = self._current.views.params() if self._current is not None else []
                bufs = [optimizer.state.get(p, {}).get("momentum_buffer") for p in params]
                if any(b is None for b in bufs):
                    self._sgd = None  # a buffer we cannot read: no update norm this step
                    self._finish(None)
                else:
                    self._finish(R.sq_norms(bufs))
        self._advance()

    # ---------------------------------------------------------- step bodies
    def _read_grads(self) -> _ParamSet | None:
        """Queue the gradient moments of every parameter that has a gradient now."""
        found = [p.grad for _, _, p in self._params]
        have = tuple(i for i, g in enumerate(found) if g is not None)
        if not have:
            self._current = None
            return None
        ps = self._param_sets.get(have)
        if ps is None or ps.order_size != len(self._order):
            ps = self._param_sets[have] = _ParamSet.build(self, have)
        views = ps.views
        grads = found if len(have) == len(found) else [found[i] for i in have]
        self._collector.put("g", R.moments(grads, views.starts, views.small))
        self._current = ps
        return ps

    def _finish(self, updates: Any) -> None:
        if updates is not None:
            self._collector.put("u", updates)
        rows = self._reduce_layers()
        for name, acc in self._layers.items():
            if acc.x_rows and acc.d_rows:
                x = _cat(acc.x_rows)
                d = _cat(acc.d_rows)
                if x.shape == d.shape:
                    self._collector.put(f"p:{name}", (x * d).mean())
        host = self._collector.resolve()
        plan, self._sgd = self._sgd, None
        if plan is not None:  # SGD: ||update|| = lr * ||g|| or lr * ||momentum buffer||
            base = host["g"][:, R.SUMSQ] if plan.kind == "grad" else host.get("u")
            if base is not None:
                host["u"] = plan.lr_sq * base
        if self._current is not None:
            self._emit_params(self._current, host)
        elif not self._warned_empty:
            self._warned_empty = True
            warnings.warn(
                f"step {self._step}: no parameter has a gradient; call backward() before "
                "optimizer.step() (or monitor.step())",
                GradprobeWarning,
                stacklevel=3,
            )
        self._emit_layers(self._gather_layers(rows, host, self._layers))
        self._layers.clear()
        self._current = None

    def _reduce_layers(self) -> list[tuple[str, str, list[str]]]:
        """Queue the step's layer statistics: one batched reduction per group of same-shaped
        tensors. Returns (collector key, kind, layer of each row)."""
        groups: dict[tuple[Any, ...], list[tuple[str, torch.Tensor]]] = {}
        rows: list[tuple[str, str, list[str]]] = []
        for name, acc in self._layers.items():
            for o, version in acc.outs:
                if o._version != version:
                    # changed in place after the activation (e.g. x += residual): this value is
                    # lost; from now on outputs are reduced as soon as they are produced
                    self._eager = True
                    continue
                key = ("o", o.shape, o.dtype, o.device, acc.act, acc.unit_dim)
                groups.setdefault(key, []).append((name, o))
            for g in acc.grads:
                groups.setdefault(("g", g.shape, g.dtype, g.device), []).append((name, g))
            for j, (stats, alive) in enumerate(acc.parts):
                self._collector.put(f"o:{name}:{j}", stats)
                if alive is not None:
                    self._collector.put(f"o:{name}:{j}:alive", alive)
                rows.append((f"o:{name}:{j}", "o", [name]))
            if acc.gnorms:
                self._collector.put(f"g:{name}", _cat(acc.gnorms))
                rows.append((f"g:{name}", "g", [name] * len(acc.gnorms)))
        for i, (key, items) in enumerate(groups.items()):
            names, tensors = [n for n, _ in items], [t for _, t in items]
            if key[0] == "o":
                stats, alive = R.output_stats(tensors, key[4], key[5])
                self._collector.put(f"group{i}", stats)
                if alive is not None:
                    self._collector.put(f"group{i}:alive", alive)
            else:
                self._collector.put(f"group{i}", R.norms(tensors))
            rows.append((f"group{i}", key[0], names))
        return rows

    @staticmethod
    def _gather_layers(
        rows: list[tuple[str, str, list[str]]],
        host: dict[str, np.ndarray],
        layers: dict[str, _Layer],
    ) -> dict[str, dict[str, Any]]:
        """Per layer: summed output moments, units alive in any batch, backward ||dL/dh||^2."""
        out: dict[str, dict[str, Any]] = {
            name: {"m": acc.m, "alive": acc.alive, "bsq": acc.bsq}
            for name, acc in layers.items()
            if acc.m is not None or acc.bsq is not None
        }
        for key, kind, names in rows:
            values = np.atleast_2d(host[key]) if kind == "o" else np.ravel(host[key])
            alive = host.get(f"{key}:alive")
            for r, name in enumerate(names):
                d = out.setdefault(name, {"m": None, "alive": None, "bsq": None})
                if kind == "g":
                    d["bsq"] = (d["bsq"] or 0.0) + float(values[r]) ** 2
                    continue
                d["m"] = values[r] if d["m"] is None else d["m"] + values[r]
                if alive is not None:
                    a = np.atleast_2d(alive)[r].astype(bool)
                    d["alive"] = a if d["alive"] is None else (d["alive"] | a)
        return out

    def _advance(self) -> None:
        self._step += 1
        if self._recording():
            self._arm()
        else:
            self._disarm()

    # ---------------------------------------------------------- row building
    def _emit_params(self, ps: _ParamSet, host: dict[str, np.ndarray]) -> None:
        g, n = host["g"], ps.meta.numel
        nonfinite, nan = ps.zeros, ps.nans  # shared by the steps' rows, never written
        if not np.isfinite(g[:, : R.SUMSQ + 1]).all():  # a sum or sum of squares is not finite
            suspect = ~np.isfinite(g[:, R.SUMSQ]) | ~np.isfinite(g[:, R.SUM])
            idx = np.flatnonzero(suspect)
            grads = ps.views.params()
            nonfinite = np.zeros(len(n), dtype=np.int64)
            nonfinite[idx] = R.nonfinite_counts([_grad(grads[i]) for i in idx])
        pe = nan
        if self.per_example:
            pe_layer = np.array([_scalar(host.get(f"p:{layer}")) for layer in ps.meta.layers])
            with np.errstate(invalid="ignore"):
                pe = np.where(ps.is_weight, np.sqrt(pe_layer), np.nan)
        u = np.asarray(host["u"], dtype=np.float64) if "u" in host else nan
        w = np.asarray(host["w"], dtype=np.float64)
        self._rows.add_params(self._step, ps.meta, g, w, u, pe, nonfinite)

    def _emit_layers(self, numbers: dict[str, dict[str, Any]]) -> None:
        if not numbers:
            return
        names = sorted(numbers, key=self._depth)
        acts = tuple(self._layers[name].act for name in names)
        key = (tuple(names), acts)
        meta = self._layer_metas.get(key)
        if meta is None:
            meta = self._layer_metas[key] = LayerMeta(
                names=np.array(names, dtype=object),
                depth=np.array([self._depth(nm) for nm in names], dtype=np.int64),
                kinds=np.array([self._kinds.get(nm, "") for nm in names], dtype=object),
                acts=np.array([a.name if a else "" for a in acts], dtype=object),
                saturating=np.array([a is not None and a.family == "saturating" for a in acts]),
            )
        m = np.full((len(names), 4), np.nan)
        dead = np.full(len(names), np.nan)
        bsq = np.full(len(names), np.nan)
        for i, name in enumerate(names):
            d = numbers[name]
            if d["m"] is not None:
                m[i] = d["m"]
            if d["alive"] is not None and d["alive"].size:
                dead[i] = 1.0 - float(np.mean(d["alive"]))
            if d["bsq"] is not None:
                bsq[i] = d["bsq"]
        self._rows.add_layers(self._step, meta, m, dead, bsq)


@dataclass(frozen=True)
class _SgdPlan:
    """A ``torch.optim.SGD`` step whose update norm needs no snapshot of the weights.

    ``kind`` is ``"grad"`` when the step is ``-lr * g`` (no momentum, no weight decay) and
    ``"momentum"`` when it is ``-lr * buf`` (momentum without Nesterov; weight decay and
    dampening are inside ``buf``). ``lr_sq`` holds each parameter's lr squared. The norm is the
    step's own: the rounding of the weights to their precision is not in it.
    """

    kind: str
    lr_sq: np.ndarray


def _sgd_plan(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> _SgdPlan | None:
    if type(optimizer) is not torch.optim.SGD:
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
    return _SgdPlan(kinds.pop(), np.array([lr_of[id(p)] ** 2 for p in params]))


def _read_only(a: np.ndarray) -> np.ndarray:
    """``a``, made unwritable: it is shared by the rows of every step."""
    a.flags.writeable = False
    return a


def _grad(p: torch.Tensor) -> torch.Tensor:
    """The gradient of a parameter known to have one."""
    g = p.grad
    assert g is not None
    return g


def _cat(values: list[Any]) -> Any:
    if isinstance(values[0], torch.Tensor):
        return torch.cat(values)
    return np.concatenate(values)


def _scalar(v: Any) -> float:
    return math.nan if v is None else float(np.asarray(v).reshape(-1)[0])


def watch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    every: int = 1,
    activations: bool = True,
    backward: bool = True,
    per_example: bool = False,
    log_dir: str | Path | None = None,
) -> Monitor:
    """Watch ``model`` during training; returns a :class:`Monitor`.

    With an ``optimizer``, gradients are read in its step pre-hook (after the last backward,
    before the update) and the update in its post-hook: the training loop stays as it is.
    Without one, call ``monitor.step()`` after ``backward()``. ``every=N`` records steps
    0, N, 2N, ...; other steps run with no module hook at all. ``per_example=True`` also records,
    for Linear weights, the RMS over the batch of per-example gradient norms ||delta_b||*||x_b||
    (what signal-propagation theory predicts). ``log_dir`` flushes records to Parquet files there,
    keeping memory bounded over long runs.
    """
    return Monitor(
        model,
        optimizer,
        every=every,
        activations=activations,
        backward=backward,
        per_example=per_example,
        log_dir=log_dir,
    )
