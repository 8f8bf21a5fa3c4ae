"""The Keras monitor: a ``model.fit`` callback that records the gradients fit really applies.

How the numbers reach the records, on a recorded step:

1. ``on_train_begin`` wraps, on the instances only, the model's layers (:mod:`._capture`) and
   the ``apply`` method of the optimizer that receives the loss gradients (for a
   ``LossScaleOptimizer``, its ``inner_optimizer``, which gets them unscaled), then makes fit
   build its train function afresh so the wrappers are part of it.
2. Inside fit's step (a ``tf.function`` on TensorFlow, eager on torch) the wrappers reduce each
   tensor with backend ops to a few numbers; the ``apply`` wrapper packs every number of the step
   into one float64 vector, calls the real ``apply`` and stores the vector in one non-trainable
   variable. Only that vector crosses to numpy, in ``on_train_batch_end``.
3. With ``every > 1``, fit alternates between two train functions: one traced with the wrappers
   armed, one traced unarmed, which is the same graph as an unwatched step (no cost at all).
4. ``on_train_end`` (or :meth:`GradientMonitor.close`) undoes every wrapper and drops the
   watched train functions; the model trains afterwards exactly as if never watched.
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

from gradprobe.errors import CaptureError, UsageError
from gradprobe.keras import _reduce as R
from gradprobe.keras._capture import LayerAcc, Patches, Tracer, layer_of
from gradprobe.records import TABLES, RecordBuffer

# columns of a parameter's row of the step vector
P_PRESENT, P_MOM, P_WSQ, P_USQ = 0, slice(1, 6), 6, 7
P_COLS = 8
# columns of a layer's row: activation moments (4), dead fraction, ||dL/dh||^2, pe mean
L_DEAD, L_BWD, L_PE = 4, 5, 6
L_COLS = 7
SUPPORTED_BACKENDS = ("tensorflow", "torch")
PENDING_STEPS = 256  # step vectors kept before they become rows (one vectorised pass)


class GradientMonitor(keras.callbacks.Callback):
    """Records per-layer gradient, activation and backward-signal statistics during ``fit``.

    The records are the same two tables as the PyTorch monitor's (:mod:`gradprobe.records`):
    ``layer`` is the Keras layer path, ``param`` the variable name (``kernel``, ``bias``...),
    ``depth`` the layer's 0-based position in the forward pass.

    Args:
        every: record steps 0, every, 2*every, ... (other steps run the unwatched graph).
        activations: mean/std/RMS, saturated and dead fractions of each layer's activation.
        backward: ||dL/dh|| at each weight layer's output (before its activation).
        per_example: for Dense kernels, the RMS over the batch of per-example gradient norms
            ||delta_b||*||x_b|| (``pe_grad_rms``).
        log_dir: flush records to Parquet files there (bounded memory over long runs).
        probe: ``(x, y)``, a fixed batch: instead of fit's gradients, measure the gradients of
            the compiled loss on it, before the update of each chosen step (``training=False``,
            so no dropout and no BatchNorm statistics change).
        probe_steps: the steps to probe (default: every ``every``-th step).

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
        every: int = 1,
        activations: bool = True,
        backward: bool = True,
        per_example: bool = False,
        log_dir: str | Path | None = None,
        *,
        probe: tuple[Any, Any] | None = None,
        probe_steps: Iterable[int] | None = None,
        max_rows_in_memory: int = 100_000,
    ) -> None:
        super().__init__()
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise UsageError(f"every must be a whole number >= 1, got {every!r}")
        if probe is not None and (not isinstance(probe, tuple) or len(probe) != 2):
            raise UsageError(f"probe must be a tuple (x, y), got {type(probe).__name__}")
        self.every, self.probe = every, probe
        self.probe_steps = None if probe_steps is None else {int(s) for s in probe_steps}
        self._tracer = Tracer(activations=activations, backward=backward, per_example=per_example)
        folder = Path(log_dir) if log_dir is not None else None
        self._buffers = {t: RecordBuffer(t, folder, max_rows_in_memory) for t in TABLES}
        self._step = 0
        self._params: list[tuple[str, str, Any]] = []  # (layer, param, variable)
        self._layers: list[str] = []
        self._patches = Patches()
        self._out: Any = None
        self._seq = 0.0
        self._scale: float | None = None
        self._skips_ok = False
        self._fns: dict[bool, Any] = {}
        self._recording = False
        self._root = ""
        self._pending: list[tuple[int, np.ndarray]] = []

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
        self._emit(ops.convert_to_numpy(vec))
        self._step += 1

    def close(self) -> None:
        """Undo every wrapper and drop the watched train functions (idempotent)."""
        self._patches.restore()
        self._tracer.patches.restore()
        self._tracer.armed = False
        model = getattr(self, "_model", None)
        if self._fns and model is not None:
            model.train_function = None  # the next fit traces an unwatched step
        self._fns = {}

    def __repr__(self) -> str:
        return (
            f"GradientMonitor(every={self.every}, steps_seen={self._step}, "
            f"rows={len(self._buffers['params'])})"
        )

    # ------------------------------------------------------- fit callbacks
    def on_train_begin(self, logs: dict | None = None) -> None:
        model = self.model
        _check_backend()
        _check_model(model)
        self._adopt(model.trainable_variables)
        self._layers = self._tracer.install(model)
        if self.probe is None:
            self._wrap_optimizer(model)
            self._out = keras.Variable(
                np.zeros(self._vector_size()), dtype="float64", trainable=False, name="gradprobe"
            )
            self._seq = 0.0
            self._make_functions(model)

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._recording = self._is_recorded(self._step)
        if self.probe is not None:
            if self._recording:
                self._run_probe()
            return
        self._tracer.reset()
        self._tracer.armed = self._recording
        if len(self._fns) > 1:
            self.model.train_function = self._fns[self._recording]

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._tracer.armed = False
        if self.probe is None and self._recording:
            self._read_step()
        self._step += 1

    def on_train_end(self, logs: dict | None = None) -> None:
        self.close()
        self.flush()

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
        return 1 + P_COLS * len(self._params) + L_COLS * len(self._layers)

    def _is_recorded(self, step: int) -> bool:
        if self.probe is not None and self.probe_steps is not None:
            return step in self.probe_steps
        return step % self.every == 0

    def _wrap_optimizer(self, model: Any) -> None:
        """Wrap ``apply`` of the optimizer that sees the unscaled loss gradients."""
        opt = model.optimizer
        target, self._scale, self._skips_ok = opt, None, False
        if isinstance(opt, keras.optimizers.LossScaleOptimizer):
            target, self._skips_ok = opt.inner_optimizer, True
        elif getattr(opt, "loss_scale_factor", None):
            self._scale = float(opt.loss_scale_factor)
        original = target.apply

        def apply(grads: Any, trainable_variables: Any = None) -> Any:
            if not self._tracer.armed:
                return original(grads, trainable_variables)
            return self._watched_apply(original, list(grads), trainable_variables)

        self._patches.set(target, "apply", apply)

    def _watched_apply(self, original: Any, grads: list[Any], trainable_variables: Any) -> Any:
        """Weights before, the real update, then the step's numbers into the side variable."""
        variables = list(trainable_variables or [v for _, _, v in self._params])
        before = {
            id(v): ops.copy(v.value) for v, g in zip(variables, grads, strict=True) if g is not None
        }
        result = original(grads, trainable_variables)
        if self._scale is not None:
            grads = [g if g is None else g / self._scale for g in grads]
        vec = self._step_vector(grads, variables, before, True, self._tracer.take())
        seq = ops.reshape(self._out.value[0] + 1, (1,))
        self._out.assign(ops.concatenate([seq, vec]))
        return result

    def _make_functions(self, model: Any) -> None:
        """Fresh train functions: one armed, and (every > 1) one unarmed."""
        self._fns = {}
        for armed in (True, False) if self.every > 1 else (True,):
            model.make_train_function(force=True)
            self._fns[armed] = model.train_function
        model.train_function = self._fns[True]

    # ------------------------------------------------------------ the step
    def _step_vector(
        self,
        grads: list[Any],
        variables: list[Any],
        before: dict[int, Any] | None,
        updated: bool | None,
        accs: dict[str, LayerAcc],
    ) -> Any:
        """All numbers of one step as one float64 vector (backend ops only)."""
        return ops.concatenate(
            [
                ops.reshape(self._param_block(grads, variables, before, updated), (-1,)),
                ops.reshape(self._layer_block(accs), (-1,)),
            ]
        )

    def _param_block(
        self,
        grads: list[Any],
        variables: list[Any],
        before: dict[int, Any] | None,
        updated: bool | None,
    ) -> Any:
        by_id = {id(v): g for v, g in zip(variables, grads, strict=True) if g is not None}
        rows = [i for i, (_, _, v) in enumerate(self._params) if id(v) in by_id]
        n = len(self._params)
        if not rows:
            return ops.zeros((n, P_COLS), "float64")
        vs = [self._params[i][2] for i in rows]
        gs = [ops.convert_to_tensor(by_id[id(v)]) for v in vs]
        w_now = [v.value for v in vs]
        w_before = [before[id(v)] for v in vs] if before is not None else w_now
        if updated:
            usq = R.diff_sq_norms(w_now, w_before)
        else:
            usq = ops.full((len(vs),), math.nan, "float64")
        block = ops.concatenate(
            [
                ops.ones((len(vs), 1), "float64"),
                R.moments(gs),
                ops.expand_dims(R.sq_norms(w_before), 1),
                ops.expand_dims(usq, 1),
            ],
            axis=1,
        )
        if len(rows) == n:
            return block
        return ops.scatter(np.asarray(rows, dtype="int32")[:, None], block, (n, P_COLS))

    def _layer_block(self, accs: dict[str, LayerAcc]) -> Any:
        nan_row = ops.full((L_COLS,), math.nan, "float64")
        rows = [_layer_row(accs[name]) if name in accs else nan_row for name in self._layers]
        if not rows:
            return ops.zeros((0, L_COLS), "float64")
        return ops.stack(rows)

    # ------------------------------------------------------------ host side
    def _read_step(self) -> None:
        host = np.asarray(self._out.numpy(), dtype=np.float64)
        if host[0] == self._seq:
            if self._skips_ok:
                return  # the LossScaleOptimizer skipped this step (non-finite gradients)
            self.close()
            raise CaptureError(
                f"step {self._step}: fit's train step never called {_opt_name(self.model)}."
                "apply/apply_gradients with the model's gradients, so nothing was recorded; "
                "a custom train_step must update through self.optimizer (or call "
                "monitor.record(grads, variables) from an eager custom loop)"
            )
        self._seq = float(host[0])
        self._emit(host[1:])

    def _emit(self, vec: np.ndarray) -> None:
        """Keep a step's numbers; they become rows in batches (see :meth:`_materialize`)."""
        self._pending.append((self._step, np.array(vec, dtype=np.float64)))
        if len(self._pending) >= PENDING_STEPS:
            self._materialize()

    def _materialize(self) -> None:
        """Turn the kept step vectors into rows of both tables, all steps at once."""
        if not self._pending:
            return
        steps = np.array([s for s, _ in self._pending], dtype=np.int64)
        vecs = np.stack([v for _, v in self._pending])
        self._pending = []
        n, m = len(self._params), len(self._layers)
        p = vecs[:, : n * P_COLS].reshape(len(steps), n, P_COLS)
        lay = vecs[:, n * P_COLS :].reshape(len(steps), m, L_COLS)
        self._param_rows(steps, p, lay[:, :, L_PE])
        self._layer_rows(steps, lay)

    def _depth(self, layer: str) -> int:
        return self._tracer.depth(layer)

    def _param_rows(self, steps: np.ndarray, p: np.ndarray, pe_sq: np.ndarray) -> None:
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
        m, k = rows[:, P_MOM], numel[p_idx]
        mean = m[:, R.SUM] / k
        ss = m[:, R.SUMSQ]
        j = layer_col[p_idx]
        pe = np.full(len(s_idx), np.nan)
        if pe_sq.shape[1]:
            kernel = (names[p_idx] == "kernel") & (j >= 0)
            pe = np.where(kernel, pe_sq[s_idx, np.maximum(j, 0)], np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            wn, un = np.sqrt(rows[:, P_WSQ]), np.sqrt(rows[:, P_USQ])
            self._buffers["params"].extend(
                {
                    "step": steps[s_idx],
                    "layer": layers[p_idx],
                    "param": names[p_idx],
                    "depth": depth[p_idx],
                    "numel": k,
                    "grad_norm": np.sqrt(ss),
                    "grad_rms": np.sqrt(ss / k),
                    "grad_mean": mean,
                    "grad_std": np.sqrt(np.maximum(ss / k - mean * mean, 0.0)),
                    "grad_max_abs": m[:, R.MAX_ABS],
                    "grad_zero_frac": m[:, R.ZEROS] / k,
                    "grad_nonfinite": m[:, R.NONFINITE],
                    "weight_norm": wn,
                    "update_norm": un,
                    "update_ratio": un / wn,
                    "pe_grad_rms": np.sqrt(pe),
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
        total, ss, n, sat = (rows[:, c] for c in range(4))
        fam = family[l_idx]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = total / n
            self._buffers["layers"].extend(
                {
                    "step": steps[s_idx],
                    "layer": names[l_idx],
                    "depth": np.array([self._depth(x) for x in names], dtype=np.int64)[l_idx],
                    "kind": np.array([self._tracer.kinds.get(x, "") for x in names])[l_idx],
                    "activation": np.array([a.name if a else "" for a in acts])[l_idx],
                    "act_mean": mean,
                    "act_std": np.sqrt(np.maximum(ss / n - mean * mean, 0.0)),
                    "act_rms": np.sqrt(ss / n),
                    "saturated_frac": np.where(fam == "saturating", sat / n, np.nan),
                    "dead_frac": np.where(fam == "rectifier", rows[:, L_DEAD], np.nan),
                    "backward_norm": np.sqrt(rows[:, L_BWD]),
                }
            )

    # ------------------------------------------------------------- probe
    def _run_probe(self) -> None:
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
        self._emit(ops.convert_to_numpy(vec))


def _layer_row(acc: LayerAcc) -> Any:
    """One layer's row: activation moments, dead fraction, ||dL/dh||^2, per-example mean."""
    nan = ops.full((), math.nan, "float64")
    mom = (
        ops.sum(ops.stack(acc.moments), axis=0)
        if acc.moments
        else ops.full((4,), math.nan, "float64")
    )
    if acc.alive:
        alive = acc.alive[0]
        for a in acc.alive[1:]:
            alive = ops.maximum(alive, a)
        dead = 1.0 - ops.mean(alive)
    else:
        dead = nan
    bwd = ops.sum(ops.stack(acc.bwd_sq)) if acc.bwd_sq else nan
    pe = nan
    if acc.x_rows and acc.d_rows and len(acc.x_rows) == len(acc.d_rows):
        pe = ops.mean(ops.concatenate(acc.x_rows) * ops.concatenate(acc.d_rows))
    return ops.concatenate([ops.cast(mom, "float64"), ops.stack([dead, bwd, pe])])


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
