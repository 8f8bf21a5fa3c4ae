"""The Keras monitor: a ``model.fit`` callback that records the gradients fit really applies.

What each step records is the schedule's choice (:mod:`gradprobe.budget`): by default an
overhead budget measured online (gradient statistics on the steps they fit in, activation and
backward-signal statistics on a share of them), or ``every=N``. How the numbers reach the
records:

1. ``on_train_begin`` wraps, on the instances only, the model's layers (:mod:`._capture`), its
   ``train_step``, and the ``apply`` method of the optimizer that receives the loss gradients
   (for a ``LossScaleOptimizer``, its ``inner_optimizer``, which gets them unscaled).
   ``model.train_function`` becomes a thin Python function that asks the schedule what the step
   records (a :class:`~gradprobe.budget.Tier`) and calls the train function traced for that tier
   (made on first use: unarmed, gradients only, or everything), then tells the schedule the
   step ended. An unarmed step is the same graph as an unwatched one.
2. On CPU (TensorFlow, one replica) a recorded step ends by packing its raw tensors into a few
   flat vectors returned beside fit's logs (:mod:`._host`): the monitor takes them out (zero-copy
   on CPU) and reduces them with the fused float64 C pass the PyTorch side uses.
3. Elsewhere (accelerators, a ``LossScaleOptimizer``, whose update runs inside a condition) the
   wrappers reduce each tensor with backend ops inside the step and write one float64 vector per
   step into a ring buffer on the device (:mod:`._ring`), read in one transfer when it is full,
   at each epoch's end and at the end of training: nothing crosses to the host per step.
4. Either way the step vectors become rows of both tables in one vectorised pass; the ``tier``
   column says what each step recorded (``layers`` rows only on ``"all"`` steps). The monitor
   defines no per-batch callback method, so Keras keeps its asynchronous batch-end dispatch.
5. ``on_train_end`` (or :meth:`GradientMonitor.close`) reads what is left in the ring, undoes
   every wrapper and drops the watched train functions; the model trains afterwards exactly as
   if never watched. After an interrupted fit (Ctrl-C), :meth:`GradientMonitor.close` keeps
   every step recorded so far.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
from keras import ops

from gradprobe import stats as S
from gradprobe._interrupts import held_interrupts
from gradprobe.budget import Budget, Every, Schedule, Tier
from gradprobe.errors import CaptureError, UsageError
from gradprobe.keras import _host as H
from gradprobe.keras import _reduce as R
from gradprobe.keras._capture import LayerAcc, Patches, Tracer, layer_of
from gradprobe.keras._ring import Ring
from gradprobe.records import TABLES, RecordBuffer

# columns of a parameter's row of the step vector: present, then R.param_stats's columns
P_PRESENT, P_STATS = 0, slice(1, 8)
P_COLS = 8
# columns of a layer's row: activation moments (4), dead fraction, ||dL/dh||^2, pe mean
L_DEAD, L_BWD, L_PE = 4, 5, 6
L_COLS = 7
SUPPORTED_BACKENDS = ("tensorflow", "torch")
PENDING_STEPS = 256  # step vectors kept before they become rows (one vectorised pass)
RING_ROWS = 256  # recorded steps held on the device between two reads
HOST = True  # on CPU, reduce recorded steps on the host (tests switch it off)
# ... on a worker thread while fit trains on: off, since the budget must see each step's cost
# on that step (a worker's work lands on the steps after it), and on a busy 2-core machine it
# did not pay (1.43x against 1.36x at every=1)
THREAD = False


class GradientMonitor(keras.callbacks.Callback):
    """Records per-layer gradient, activation and backward-signal statistics during ``fit``.

    The records are the same two tables as the PyTorch monitor's (:mod:`gradprobe.records`):
    ``layer`` is the Keras layer path, ``param`` the variable name (``kernel``, ``bias``...),
    ``depth`` the layer's 0-based position in the forward pass.

    Args:
        every: record everything on steps 0, every, 2*every, ... (other steps run the unwatched
            graph); the default (None) follows the overhead ``budget`` instead.
        activations: mean/std/RMS, saturated and dead fractions of each layer's activation.
        backward: ||dL/dh|| at each weight layer's output (before its activation).
        per_example: for Dense kernels, the RMS over the batch of per-example gradient norms
            ||delta_b||*||x_b|| (``pe_grad_rms``).
        log_dir: flush records to Parquet files there (bounded memory over long runs).
        probe: ``(x, y)``, a fixed batch: instead of fit's gradients, measure the gradients of
            the compiled loss on it, before the update of each chosen step (``training=False``,
            so no dropout and no BatchNorm statistics change).
        probe_steps: the steps to probe (default: the steps the schedule records).
        budget: without ``every``, the cost of watching as a fraction of the step time
            (default 0.05): gradient statistics on every step when they fit, activation and
            backward-signal statistics on the share of steps that keeps the measured cost
            inside it (:class:`gradprobe.budget.Budget`). The ``tier`` column of the records
            says what each step recorded (``layers`` rows only on ``"all"`` steps).

    Example::

        >>> import numpy as np, keras, gradprobe.keras
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, "tanh"),
        ...                           keras.layers.Dense(1)])
        >>> model.compile("sgd", "mse")
        >>> mon = gradprobe.keras.GradientMonitor()
        >>> x, y = np.ones((16, 4), "float32"), np.zeros((16, 1), "float32")
        >>> _ = model.fit(x, y, batch_size=8, epochs=1, callbacks=[mon], verbose=0)
        >>> mon.to_pandas()[["step", "layer", "param", "depth"]].head(2).values.tolist()
        [[0, 'dense', 'kernel', 0], [0, 'dense', 'bias', 0]]

    For a custom training loop call :meth:`record` after ``tape.gradient``.
    """

    def __init__(
        self,
        every: int | None = None,
        activations: bool = True,
        backward: bool = True,
        per_example: bool = False,
        log_dir: str | Path | None = None,
        *,
        budget: float | None = 0.05,
        probe: tuple[Any, Any] | None = None,
        probe_steps: Iterable[int] | None = None,
        max_rows_in_memory: int = 100_000,
    ) -> None:
        super().__init__()
        if every is not None and (
            not isinstance(every, int) or isinstance(every, bool) or every < 1
        ):
            raise UsageError(f"every must be a whole number >= 1, got {every!r}")
        if probe is not None and (not isinstance(probe, tuple) or len(probe) != 2):
            raise UsageError(f"probe must be a tuple (x, y), got {type(probe).__name__}")
        self.every, self.probe = every, probe
        top = Tier.ALL if (activations or backward or per_example) else Tier.GRADIENTS
        self.schedule: Schedule = (
            Every(every, top)
            if every is not None
            else Budget(budget, top=top)
            if budget is not None
            else Every(1, top)
        )
        self.probe_steps = None if probe_steps is None else {int(s) for s in probe_steps}
        self._tracer = Tracer(activations=activations, backward=backward, per_example=per_example)
        folder = Path(log_dir) if log_dir is not None else None
        self._buffers = {t: RecordBuffer(t, folder, max_rows_in_memory) for t in TABLES}
        self._step = 0
        self._params: list[tuple[str, str, Any]] = []  # (layer, param, variable)
        self._layers: list[str] = []
        self._patches = Patches()
        self._ring: Ring | None = None
        self._calls: int | None = 0  # recorded steps counted on the device (None: read it)
        self._launched: list[tuple[int, int, Tier]] = []  # (device count, step, tier) unread
        self._checked = False  # the first recorded step of this fit was read back
        self._scale: float | None = None
        self._target: Any = None  # the optimizer whose apply is wrapped
        self._skips_ok = False
        self._fns: dict[Tier, Any] = {}  # what a step records -> its train function
        self._level = Tier.NONE  # what the step being traced or run records
        self._host = False  # this fit reduces recorded steps on the host
        self._graph: Any = None  # the graph of the step being traced (TensorFlow)
        self._stash: tuple | None = None  # a traced step's raw tensors, for the host
        self._layouts: list[H.Layout] = []
        self._layout_ids: dict[tuple, int] = {}
        self._cond_apply = False  # on the host path, an update that ran inside a condition
        self._epoch_start = 0  # the first step of the current epoch
        self._reducer = H.Reducer(threaded=THREAD)
        self._unwatched: Any = None  # what model.train_function is given back on close
        self._root = ""
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # steps, vecs, tiers
        self._n_pending = 0

    # ---------------------------------------------------------------- public
    @property
    def steps_seen(self) -> int:
        """Training steps (batches) seen so far, recorded or not."""
        return self._step

    def to_pandas(self, table: str = "params") -> pd.DataFrame:
        """The records as one tidy long table: ``params`` (default) or ``layers``."""
        if table not in TABLES:
            raise UsageError(f"unknown table {table!r}: expected one of {', '.join(TABLES)}")
        self._materialize()
        return self._buffers[table].to_pandas()

    def flush(self) -> None:
        """Write the records held in memory to ``log_dir`` (no-op without one)."""
        self._materialize()
        for buf in self._buffers.values():
            buf.flush()

    def record(self, grads: Sequence[Any], variables: Sequence[Any]) -> None:
        """Record one step of a custom training loop: call after ``tape.gradient``.

        Eager only (outside ``tf.function``): the numbers are read at once. ``variables`` are
        the ones the gradients belong to (e.g. ``model.trainable_variables``); layer and
        parameter names come from each variable's ``path``. The update is not seen here, so
        ``update_norm`` is NaN.
        """
        _require_eager("record()")
        if len(grads) != len(variables):
            raise CaptureError(
                f"record() expects one gradient per variable, got {len(grads)} gradients for "
                f"{len(variables)} variables"
            )
        self._adopt(variables)
        vec = self._step_vector(list(grads), list(variables), None, None, {})
        self._emit(self._step, ops.convert_to_numpy(vec), Tier.GRADIENTS)
        self._step += 1

    def close(self) -> None:
        """Keep what the device still holds, undo every wrapper, drop the watched train
        functions (idempotent; after an interrupted fit, call it to keep what was recorded)."""
        self._patches.restore()
        self._tracer.patches.restore()
        self._tracer.armed, self._level = False, Tier.NONE
        model = getattr(self, "_model", None)
        if model is not None and getattr(model, "train_function", None) == self._train_function:
            model.train_function = self._unwatched  # None: the next fit traces an unwatched step
        self._fns, self._unwatched = {}, None
        self._drain()
        self._collect(wait=True)
        self._reducer.close()

    def __repr__(self) -> str:
        return (
            f"GradientMonitor(every={self.every}, schedule={type(self.schedule).__name__}, "
            f"steps_seen={self._step}, "
            f"rows={len(self._buffers['params'])})"
        )

    # ------------------------------------------------------- fit callbacks
    def on_train_begin(self, logs: dict | None = None) -> None:
        model = self.model
        self.close()  # wrappers left by an interrupted fit
        _check_backend()
        _check_model(model)
        self._adopt(model.trainable_variables)
        self._layers = self._tracer.install(model)
        if self.probe is None:
            self._wrap_optimizer(model)
            self._wrap_train_step(model)
            self._ring = Ring(RING_ROWS, self._vector_size())
            self._calls, self._checked = 0, False
            self._host, self._cond_apply = HOST and _host_capable(model), False
            self._reducer = H.Reducer(threaded=THREAD)
            self._fns, self._unwatched = {}, None
        else:  # probe mode: fit's own steps run unwatched
            model.make_train_function()
            self._fns = {Tier.NONE: model.train_function}
            self._unwatched = model.train_function
        model.train_function = self._train_function

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_start = self._step

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._drain()

    def on_train_end(self, logs: dict | None = None) -> None:
        self.close()
        self.flush()

    # ------------------------------------------------------ fit's train step
    def _train_function(self, *args: Any, **kwargs: Any) -> Any:
        """What fit calls once per step: the train function traced for what the step records
        (the schedule decides), then the schedule hears that the step ended."""
        step = self._step
        tier = self._tier(step)
        # a step that traces its train function, or that starts an epoch (the time since the
        # last step holds the epoch's end), is no measure of what watching costs
        timed = tier in self._fns and step != self._epoch_start
        if self.probe is not None:
            if tier != Tier.NONE:
                self._run_probe(step)
            out = self._fns[Tier.NONE](*args, **kwargs)
        elif tier != Tier.NONE:
            out = self._armed_step(step, tier, args, kwargs)
        else:
            out = self._function(Tier.NONE)(*args, **kwargs)
        self._step += 1
        if timed:
            self.schedule.done(step)
        return out

    def _tier(self, step: int) -> Tier:
        if self.probe is not None and self.probe_steps is not None:
            return Tier.ALL if step in self.probe_steps else Tier.NONE
        return self.schedule.tier(step)

    def _function(self, tier: Tier) -> Any:
        """The train function for ``tier``, made on first use (traced by its first call)."""
        fn = self._fns.get(tier)
        if fn is None:
            model = self.model
            model.make_train_function(force=True)
            fn = self._fns[tier] = model.train_function
            model.train_function = self._train_function
        return fn

    def _armed_step(self, step: int, tier: Tier, args: tuple, kwargs: dict) -> Any:
        ring = self._ring
        assert ring is not None
        fn = self._function(tier)
        if self._calls is None or self._cond_apply:
            self._calls = ring.count()
        self._tracer.armed, self._level = tier == Tier.ALL, tier
        try:
            out = fn(*args, **kwargs)
        except BaseException:
            self._calls = None  # the step may or may not have run: read the count next time
            raise
        finally:
            self._tracer.armed, self._level = False, Tier.NONE
        key = next((k for k in out if k.startswith(H.KEY)), None) if type(out) is dict else None
        if key is not None:  # reduced on the host (inline, or on the reducer's thread)
            self._reducer.put(step, tier, self._layouts[int(key[len(H.KEY) :])], out.pop(key))
            if self._reducer.ready() >= PENDING_STEPS:
                self._collect()
            return out
        if self._cond_apply and ring.count() == self._calls:
            return out  # the update's condition was false: the step was skipped, no row
        self._calls += 1
        self._launched.append((self._calls, step, tier))
        if not self._checked or len(self._launched) >= ring.rows:
            self._checked = True
            self._drain()  # the first recorded step is read at once: it must have a row
        return out

    # ---------------------------------------------------------- structure
    def _adopt(self, variables: Sequence[Any]) -> None:
        """Name the variables (layer, param); new ones are added after those known."""
        self._root = getattr(getattr(self, "_model", None), "name", "") or self._root
        known = {id(v) for _, _, v in self._params}
        if any(id(v) not in known for v in variables):
            self._materialize()  # pending vectors have the old layout
        for v in variables:
            if id(v) not in known:
                layer, param = layer_of(v, self._root)
                self._params.append((layer, param, v))
                known.add(id(v))

    def _vector_size(self) -> int:
        return P_COLS * len(self._params) + L_COLS * len(self._layers)

    def _wrap_train_step(self, model: Any) -> None:
        """Count each armed step on the device; the tracer starts each step afresh."""
        original = model.train_step

        def train_step(*args: Any, **kwargs: Any) -> Any:
            if self._level == Tier.NONE:
                return original(*args, **kwargs)
            self._tracer.reset()
            self._tracer.raw, self._stash, self._graph = self._host, None, _graph()
            assert self._ring is not None
            if not self._host:
                self._ring.tick()
            logs = original(*args, **kwargs)
            stash, self._stash = self._stash, None
            if stash is None:
                return logs
            packed = self._packed(stash) if type(logs) is dict else None
            if packed is None:
                raise CaptureError(
                    "the train step returned no dict of logs (or a layer output of unknown "
                    f"shape), got {type(logs).__name__}; the monitor hands its tensors to the "
                    "host beside fit's logs; fix: return a dict from train_step, or set "
                    "gradprobe.keras.monitor.HOST = False to reduce on the device"
                )
            lay, bufs = packed
            sig = lay.signature()
            if sig not in self._layout_ids:
                self._layout_ids[sig] = len(self._layouts)
                self._layouts.append(lay)
            return {**logs, f"{H.KEY}{self._layout_ids[sig]}": bufs}

        self._patches.set(model, "train_step", train_step)

    def _wrap_optimizer(self, model: Any) -> None:
        """Wrap ``apply`` of the optimizer that sees the unscaled loss gradients."""
        opt = model.optimizer
        target, self._scale, self._skips_ok = opt, None, False
        if isinstance(opt, keras.optimizers.LossScaleOptimizer):
            target, self._skips_ok = opt.inner_optimizer, True
        elif getattr(opt, "loss_scale_factor", None):
            self._scale = float(opt.loss_scale_factor)
        original = target.apply
        self._target = target

        def apply(grads: Any, trainable_variables: Any = None) -> Any:
            if self._level == Tier.NONE:
                return original(grads, trainable_variables)
            return self._watched_apply(original, list(grads), trainable_variables)

        self._patches.set(target, "apply", apply)

    def _watched_apply(self, original: Any, grads: list[Any], trainable_variables: Any) -> Any:
        """Weights before, the real update, then the step's numbers: into the ring, or (on the
        host path, when this runs in the step's own graph) kept for :mod:`._host`."""
        variables = list(trainable_variables or [v for _, _, v in self._params])
        rows, vs, gs = self._present(grads, variables)
        lr_sq = _sgd_lr_sq(self._target, vs)  # read before the update, as the step reads it
        if self._host and _graph() is self._graph:
            import tensorflow as tf

            dtype = H.common_dtype([*gs, *vs])
            before = H.flat([v.value for v in vs], dtype)  # copied before the update starts
            with tf.control_dependencies([before]):
                result = original(grads, trainable_variables)
            if self._scale is not None:
                gs = [g / self._scale for g in gs]
            after = None if lr_sq is not None else [v.value for v in vs]
            self._stash = (rows, gs, before, after, lr_sq, self._tracer.take(), dtype)
            return result
        groups = R.shape_groups(vs)
        before = R.stack_groups([v.value for v in vs], groups)
        assert self._ring is not None
        if self._host:  # inside a condition of a host step: count the update where it runs
            self._cond_apply = True
            self._ring.tick()
        result = original(grads, trainable_variables)
        if self._scale is not None:
            grads = [g if g is None else g / self._scale for g in grads]
        accs = self._tracer.reduce_raw(self._tracer.take())
        self._ring.write(self._step_vector(grads, variables, before, True, accs, lr_sq))
        return result

    def _packed(self, stash: tuple) -> tuple[H.Layout, dict[str, Any]] | None:
        """A stashed step as flat buffers for the host (None: shapes not static enough)."""
        rows, gs, before, after, lr_sq, accs, dtype = stash
        at = {name: j for j, name in enumerate(self._layers)}
        own = {at[name]: acc for name, acc in accs.items() if name in at}
        pe = {j: v for j, v in ((j, _pe(acc)) for j, acc in own.items()) if v is not None}
        n, m = len(self._params), len(self._layers)
        return H.pack(n, m, rows, gs, before, after, lr_sq, own, pe, dtype)

    # ------------------------------------------------------------ the step
    def _step_vector(
        self,
        grads: list[Any],
        variables: list[Any],
        before: list[Any] | None,
        updated: bool | None,
        accs: dict[str, LayerAcc],
        lr_sq: Any = None,
    ) -> Any:
        """All numbers of one step as one float64 vector (backend ops only).

        ``before``: the weights before the update, as :func:`R.stack_groups` over the present
        variables' shape groups (None: the weights now, and no update is seen). ``lr_sq``: for
        a step known to be ``-lr * g``, lr squared; the update norm is then ``lr * ||g||`` and
        the weights are not read again after the update.
        """
        block = self._param_block(grads, variables, before, updated, lr_sq)
        return ops.concatenate(
            [
                ops.reshape(block, (-1,)),
                ops.reshape(self._layer_block(accs), (-1,)),
            ]
        )

    def _present(
        self, grads: list[Any], variables: list[Any]
    ) -> tuple[list[int], list[Any], list[Any]]:
        """Rows of ``self._params`` that have a gradient, their variables and gradients."""
        by_id = {id(v): g for v, g in zip(variables, grads, strict=True) if g is not None}
        rows = [i for i, (_, _, v) in enumerate(self._params) if id(v) in by_id]
        vs = [self._params[i][2] for i in rows]
        return rows, vs, [ops.convert_to_tensor(by_id[id(v)]) for v in vs]

    def _param_block(
        self,
        grads: list[Any],
        variables: list[Any],
        before: list[Any] | None,
        updated: bool | None,
        lr_sq: Any = None,
    ) -> Any:
        rows, vs, gs = self._present(grads, variables)
        n = len(self._params)
        if not rows:
            return ops.zeros((n, P_COLS), "float64")
        groups = R.shape_groups(vs)
        if updated and lr_sq is not None and before is not None:
            after = None  # the update norm comes from lr * ||g||
        else:
            now = R.stack_groups([v.value for v in vs], groups, copy=False)
            before, after = (before, now) if updated else (now, None)
        stats = R.param_stats(gs, before, after, groups, lr_sq)  # type: ignore[arg-type]
        block = ops.concatenate([ops.ones((len(vs), 1), "float64"), stats], axis=1)
        if len(rows) == n:
            return block
        return ops.scatter(np.asarray(rows, dtype="int32")[:, None], block, (n, P_COLS))

    def _layer_block(self, accs: dict[str, LayerAcc]) -> Any:
        """(layers, L_COLS): activation moments, dead fraction, ||dL/dh||^2, per-example mean."""
        n = len(self._layers)
        if not n:
            return ops.zeros((0, L_COLS), "float64")
        at = {name: j for j, name in enumerate(self._layers)}
        own = [(at[name], acc) for name, acc in accs.items() if name in at]
        outs = [(j, out) for j, acc in own for out in acc.outs]
        cols = [_nan((n, 4))]
        if outs:
            order, rows = R.activation_stats([out for _, out in outs])
            cols[0] = R.by_layer(rows, [outs[i][0] for i in order], n)
        cols.append(self._dead(own, n))
        bwd = [(j, sq) for j, acc in own for sq in acc.bwd_sq]  # summed per layer
        pe = [(j, v) for j, v in ((j, _pe(acc)) for j, acc in own) if v is not None]
        for found in (bwd, pe):
            owners = [j for j, _ in found]
            cols.append(
                R.by_layer(ops.stack([v for _, v in found])[:, None], owners, n)
                if found
                else _nan((n, 1))
            )
        return ops.concatenate(cols, axis=1)

    @staticmethod
    def _dead(own: list[tuple[int, LayerAcc]], n: int) -> Any:
        """(n, 1): the fraction of a rectifier layer's units no example of the batch activated."""
        single, owners, several = [], [], []
        for j, acc in own:
            relu = [o for o, a in acc.outs if a is not None and a.family == "rectifier"]
            relu = [o for o in relu if len(o.shape) >= 2]
            if len(relu) == 1:
                single.append(relu[0])
                owners.append(j)
            elif relu:  # one unit is alive if any of the layer's outputs activated it
                alive = R.alive_units(relu[0])
                for o in relu[1:]:
                    alive = ops.maximum(alive, R.alive_units(o))
                several.append((j, ops.mean(alive)))
        parts, who = [], []
        if single:
            order, fracs = R.alive_fractions(single)
            parts.append(fracs)
            who += [owners[i] for i in order]
        if several:
            parts.append(ops.stack([f for _, f in several]))
            who += [j for j, _ in several]
        if not parts:
            return _nan((n, 1))
        return 1.0 - R.by_layer(ops.concatenate(parts)[:, None], who, n)

    # ------------------------------------------------------------ host side
    def _drain(self) -> None:
        """Read the ring once; each launched step whose row was written becomes pending."""
        if not self._launched or self._ring is None:
            return
        launched, self._launched = self._launched, []
        counts = np.array([c for c, _, _ in launched], dtype=np.int64)
        steps = np.array([s for _, s, _ in launched], dtype=np.int64)
        tiers = np.array([t for _, _, t in launched], dtype=np.int64)
        rows = self._ring.read()[(counts - 1) % self._ring.rows]
        written = rows[:, 0] == counts
        self._emit_many(steps[written], rows[written, 1:], tiers[written])
        if not written.all() and not self._skips_ok:
            model = getattr(self, "_model", None)
            self.close()
            raise CaptureError(
                f"step {steps[~written][0]}: fit's train step never called {_opt_name(model)}."
                "apply/apply_gradients with the model's gradients, so nothing was recorded; "
                "a custom train_step must update through self.optimizer (or call "
                "monitor.record(grads, variables) from an eager custom loop)"
            )
        # with a LossScaleOptimizer a missing row is a skipped step (non-finite gradients)

    def _collect(self, wait: bool = False) -> None:
        """The steps the host reducer has finished become pending (all of them with ``wait``)."""
        done = self._reducer.take(wait)
        if done:
            steps = np.array([s for s, _, _ in done], dtype=np.int64)
            self._emit_many(steps, np.stack([v for _, v, _ in done]), [t for _, _, t in done])

    def _emit(self, step: int, vec: np.ndarray, tier: Tier) -> None:
        """Keep a step's numbers; they become rows in batches (see :meth:`_materialize`)."""
        self._emit_many(np.array([step]), np.asarray(vec, dtype=np.float64)[None, :], [tier])

    def _emit_many(self, steps: np.ndarray, vecs: np.ndarray, tiers: Sequence[int]) -> None:
        self._pending.append((steps, vecs, np.asarray(tiers, dtype=np.int64)))
        self._n_pending += len(steps)
        if self._n_pending >= PENDING_STEPS:
            self._materialize()

    def _materialize(self) -> None:
        """Turn the kept step vectors into rows of both tables, all steps at once. A Ctrl-C
        waits until the rows are in the buffers (:func:`gradprobe._interrupts.held_interrupts`)."""
        with held_interrupts():
            self._rows_now()

    def _rows_now(self) -> None:
        self._drain()
        self._collect(wait=True)
        if not self._pending:
            return
        steps = np.concatenate([s for s, _, _ in self._pending]).astype(np.int64)
        vecs = np.concatenate([v for _, v, _ in self._pending]).astype(np.float64)
        tiers = np.concatenate([t for _, _, t in self._pending])
        self._pending, self._n_pending = [], 0
        n, m = len(self._params), len(self._layers)
        p = vecs[:, : n * P_COLS].reshape(len(steps), n, P_COLS)
        lay = vecs[:, n * P_COLS :].reshape(len(steps), m, L_COLS)
        self._param_rows(steps, p, lay[:, :, L_PE], tiers)
        self._layer_rows(steps, lay)

    def _depth(self, layer: str) -> int:
        return self._tracer.depth(layer)

    def _param_rows(
        self, steps: np.ndarray, p: np.ndarray, pe_sq: np.ndarray, tiers: np.ndarray
    ) -> None:
        s_idx, p_idx = np.nonzero(p[:, :, P_PRESENT] > 0)
        if not len(s_idx):
            return
        layers = np.array([layer for layer, _, _ in self._params], dtype=object)
        names = np.array([param for _, param, _ in self._params], dtype=object)
        numel = np.array([int(np.prod(v.shape)) for _, _, v in self._params], dtype=np.int64)
        depth = np.array([self._depth(layer) for layer in layers], dtype=np.int64)
        col = {name: j for j, name in enumerate(self._layers)}
        layer_col = np.array([col.get(layer, -1) for layer in layers])
        rows = p[s_idx, p_idx]
        m, k = rows[:, P_STATS], numel[p_idx]
        j = layer_col[p_idx]
        pe = np.full(len(s_idx), np.nan)
        if pe_sq.shape[1]:
            kernel = (names[p_idx] == "kernel") & (j >= 0)
            pe = np.where(kernel, pe_sq[s_idx, np.maximum(j, 0)], np.nan)
        stats = S.param_columns(
            m[:, R.SUM],
            m[:, R.SUMSQ],
            m[:, R.MAX_ABS],
            m[:, R.ZEROS],
            m[:, R.NONFINITE],
            m[:, R.WSQ],
            m[:, R.USQ],
            k,
        )
        self._buffers["params"].extend(
            {
                "step": steps[s_idx],
                "layer": layers[p_idx],
                "param": names[p_idx],
                "depth": depth[p_idx],
                "numel": k,
                **stats,
                "pe_grad_rms": S.norm(pe),
                "tier": np.where(tiers[s_idx] == Tier.ALL, "all", "gradients").astype(object),
            }
        )

    def _layer_rows(self, steps: np.ndarray, lay: np.ndarray) -> None:
        order = sorted(range(len(self._layers)), key=lambda j: self._depth(self._layers[j]))
        lay = lay[:, order]
        names = np.array([self._layers[j] for j in order], dtype=object)
        acts = [self._tracer.acts.get(name) for name in names]
        family = np.array([a.family if a else "" for a in acts], dtype=object)
        s_idx, l_idx = np.nonzero(~np.all(np.isnan(lay), axis=2))
        if not len(s_idx):
            return
        rows = lay[s_idx, l_idx]
        fam = family[l_idx]
        stats = S.layer_columns(
            rows[:, 0],
            rows[:, 1],
            rows[:, 2],
            rows[:, 3],
            rows[:, L_DEAD],
            rows[:, L_BWD],
            fam == S.SATURATING,
            fam == S.RECTIFIER,
        )
        self._buffers["layers"].extend(
            {
                "step": steps[s_idx],
                "layer": names[l_idx],
                "depth": np.array([self._depth(x) for x in names], dtype=np.int64)[l_idx],
                "kind": np.array([self._tracer.kinds.get(x, "") for x in names])[l_idx],
                "activation": np.array([a.name if a else "" for a in acts])[l_idx],
                **stats,
                "tier": np.full(len(s_idx), "all", dtype=object),
            }
        )

    # ------------------------------------------------------------- probe
    def _run_probe(self, step: int) -> None:
        from gradprobe.keras._probe import gradients

        x, y = self.probe  # type: ignore[misc]
        model = self.model
        self._tracer.reset()
        self._tracer.armed = True
        try:
            grads = gradients(model, x, y)
        finally:
            self._tracer.armed = False
        accs = self._tracer.take()
        vec = self._step_vector(grads, list(model.trainable_variables), None, None, accs)
        self._emit(step, ops.convert_to_numpy(vec), Tier.ALL)


def _nan(shape: tuple[int, ...]) -> Any:
    return ops.full(shape, math.nan, "float64")


def _pe(acc: LayerAcc) -> Any:
    """Mean over the batch of ||x_b||^2 ||delta_b||^2 (None: not measured)."""
    if acc.x_rows and acc.d_rows and len(acc.x_rows) == len(acc.d_rows):
        return ops.mean(ops.concatenate(acc.x_rows) * ops.concatenate(acc.d_rows))
    return None


def _sgd_lr_sq(opt: Any, variables: list[Any]) -> Any:
    """lr squared as a float64 tensor when ``opt.apply`` is exactly ``w -= lr * g`` for the
    gradients the monitor records (plain SGD without momentum, weight decay, clipping, EMA or
    accumulation); None otherwise, and the update is read from the weights."""
    if type(opt) is not keras.optimizers.SGD or getattr(opt, "momentum", None):
        return None
    for attr in ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm"):
        if getattr(opt, attr, None):
            return None
    if getattr(opt, "use_ema", False) or getattr(opt, "gradient_accumulation_steps", None):
        return None
    dtypes = {str(v.dtype) for v in variables}
    if len(dtypes) != 1:
        return None
    lr = ops.cast(opt.learning_rate, dtypes.pop())  # the step casts lr to the weights' dtype
    return ops.square(ops.cast(lr, "float64"))


def _graph() -> Any:
    """The graph being traced (TensorFlow), else None."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    return None if tf.executing_eagerly() else tf.compat.v1.get_default_graph()


def _host_capable(model: Any) -> bool:
    """Whether fit's recorded steps may hand their tensors to the host: TensorFlow on CPU
    only (no GPU or TPU device), one replica, and an optimizer whose update is not inside a
    condition (a ``LossScaleOptimizer`` skips updates in a ``cond``: its numbers stay there)."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    if any(tf.config.list_logical_devices(kind) for kind in ("GPU", "TPU")):
        return False
    if getattr(model.distribute_strategy, "num_replicas_in_sync", 1) != 1:
        return False
    return not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)


def _opt_name(model: Any) -> str:
    return type(getattr(model, "optimizer", None)).__name__


def _check_backend() -> None:
    name = keras.backend.backend()
    if name not in SUPPORTED_BACKENDS:
        raise CaptureError(
            f"GradientMonitor in fit needs the TensorFlow or torch backend of Keras, got "
            f"KERAS_BACKEND={name!r}; set KERAS_BACKEND=tensorflow (or torch) before importing "
            "keras, or call monitor.record(grads, variables) in an eager custom loop"
        )


def _check_model(model: Any) -> None:
    if not model.trainable_variables:
        raise CaptureError(
            f"{type(model).__name__} has no trainable weights (all layers frozen or no layer "
            "with weights): nothing to record; set layer.trainable = True on the layers to train"
        )
    if model.optimizer is None:
        raise CaptureError("the model has no optimizer: call model.compile(optimizer=...) first")
    opt = model.optimizer
    inner = getattr(opt, "inner_optimizer", opt)
    steps = getattr(inner, "gradient_accumulation_steps", None)
    if steps:
        raise CaptureError(
            f"the optimizer accumulates gradients (gradient_accumulation_steps={steps}): "
            "GradientMonitor records one applied gradient per fit step and cannot see the "
            "accumulated one; expected gradient_accumulation_steps=None; fix: drop it, or "
            "accumulate in a custom loop and call monitor.record(mean_grads, variables)"
        )
    spe = getattr(model, "steps_per_execution", 1) or 1
    if spe != 1:
        raise CaptureError(
            f"model.compile(steps_per_execution={spe}) runs several steps per call, so the "
            "callback cannot read each step; expected steps_per_execution=1"
        )


def _require_eager(what: str) -> None:
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if not tf.executing_eagerly():
            raise CaptureError(
                f"{what} reads numbers at once and must run eagerly, but it was called inside "
                "a tf.function; return the gradients from your compiled step and call it there"
            )
