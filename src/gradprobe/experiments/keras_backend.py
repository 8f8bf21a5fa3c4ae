"""Training the experiments' networks with Keras ``fit``, watched by :class:`GradientMonitor`.

A mirror of :mod:`gradprobe.experiments.torch_backend`: the same numpy initial weights
(:func:`~gradprobe.experiments.init.mlp_weights`), Keras's own optimizers under the same names,
the same batches in the same order (one ``numpy.random.default_rng([seed, 1])`` permutation per
epoch), the same losses (mean squared error; binary cross-entropy clipped at 1e-7) and the same
per-step, per-epoch and first-layer rows, so the two frameworks' runs can be compared number for
number. Training is one ``model.fit`` call; the batches come from a ``keras.utils.PyDataset``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from gradprobe.errors import UsageError
from gradprobe.experiments.data import Dataset
from gradprobe.experiments.init import mlp_weights
from gradprobe.experiments.outcome import Outcome
from gradprobe.experiments.spec import ModelSpec, TrainSpec, Variant
from gradprobe.keras import GradientMonitor


def build_mlp(spec: ModelSpec, n_inputs: int, seed: int) -> keras.Sequential:
    """The MLP of ``spec`` with weights drawn from ``numpy.random.default_rng(seed)``.

    Layers are named ``dense_0`` (input side) ... ``dense_<depth>`` (output).
    """
    weights = mlp_weights(seed, spec.widths(n_inputs), spec.init)
    layers: list[Any] = [keras.Input((n_inputs,))]
    for i, (kernel, _) in enumerate(weights):
        act = spec.activation if i < len(weights) - 1 else spec.output_activation
        layers.append(
            keras.layers.Dense(
                kernel.shape[1], activation=None if act == "linear" else act, name=f"dense_{i}"
            )
        )
    model = keras.Sequential(layers, name="mlp")
    for layer, (kernel, bias) in zip(model.layers, weights, strict=True):
        layer.set_weights([kernel, bias])
    return model


def make_optimizer(name: str, lr: float) -> keras.optimizers.Optimizer:
    """Keras's optimizer ``name`` with its defaults (Adam/RMSprop epsilon 1e-7)."""
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=lr)
    if name == "momentum":
        return keras.optimizers.SGD(learning_rate=lr, momentum=0.9)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=lr)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate=lr)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=lr)
    raise ValueError(name)


def make_loss(name: str) -> keras.losses.Loss:
    """Mean squared error, or binary cross-entropy on probabilities (clipped at 1e-7)."""
    if name == "mse":
        return keras.losses.MeanSquaredError()
    return keras.losses.BinaryCrossentropy()


class _Batches(keras.utils.PyDataset):
    """The torch backend's batches: epoch ``e`` reads rows in the order ``orders[e]``.

    The epoch is set by the training callback's ``on_epoch_begin`` (see :class:`_Rows`), not
    counted in ``on_epoch_end``: fit reads two batches and calls ``on_epoch_end`` once before
    training starts, which shifted every epoch's order by one."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch: int, orders: list[np.ndarray]):
        super().__init__()
        self.x, self.y, self.batch, self.orders = x, y, batch, orders
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        idx = self.orders[min(self.epoch, len(self.orders) - 1)][i * self.batch :][: self.batch]
        return self.x[idx], self.y[idx]


class _BatchLoss(keras.metrics.Metric):
    """The loss of the last batch (fit's own ``loss`` is a running mean over the epoch)."""

    def __init__(self, loss: keras.losses.Loss) -> None:
        super().__init__(name="batch_loss")
        self.loss = loss
        self.value = self.add_variable((), initializer="zeros", name="value")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        self.value.assign(ops.cast(self.loss(y_true, y_pred), self.value.dtype))

    def result(self) -> Any:
        return self.value.value


def _tap_first_kernel(model: keras.Sequential) -> keras.Variable:
    """Keep mean |dL/dW| of the first kernel of each step in a variable (like the torch side)."""
    opt, kernel = model.optimizer, model.layers[0].kernel
    tap = keras.Variable(0.0, trainable=False, name="first_kernel_mean_abs_grad")
    original = opt.apply

    def apply(grads: Any, trainable_variables: Any = None) -> Any:
        variables = list(trainable_variables or model.trainable_variables)
        for g, v in zip(grads, variables, strict=True):
            if v is kernel and g is not None:
                tap.assign(ops.mean(ops.abs(g)))
        return original(grads, trainable_variables)

    opt.apply = apply
    return tap


class _Rows(keras.callbacks.Callback):
    """Writes the Outcome's steps, firstlayer and epochs rows as fit runs."""

    def __init__(
        self,
        out: Outcome,
        data: tuple,
        train: TrainSpec,
        tap: keras.Variable,
        on_step: Callable[[int, float], None] | None,
    ) -> None:
        super().__init__()
        self.out, self.data, self.train, self.tap, self.on_step = out, data, train, tap, on_step
        self.step = 0
        self.w_start: np.ndarray | None = None
        self.w_before: np.ndarray | None = None
        self.batches: _Batches | None = None

    def _first(self) -> np.ndarray:
        return np.asarray(self.model.layers[0].kernel.numpy(), dtype=np.float64)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.w_start = self._first()

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self.w_before = self._first()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        value = float(ops.convert_to_numpy((logs or {})["batch_loss"]))
        w, lr = self._first(), self.train.lr
        self.out.steps.append({"step": self.step, "epoch": self.epoch, "loss": value})
        self.out.firstlayer.append(
            {
                "step": self.step,
                "true_mean_abs_grad": float(self.tap.numpy()),
                "estimate_mean_abs": float(np.mean(np.abs((self.w_before - w) / lr))),
                "cumulative_estimate_mean_abs": float(np.mean(np.abs((self.w_start - w) / lr))),
            }
        )
        if self.on_step is not None:
            self.on_step(self.step, value)
        self.step += 1
        if not math.isfinite(value):
            self.out.status = "non_finite"
            self.out.message = f"non-finite loss ({value}) at step {self.step - 1}"
            self.model.stop_training = True

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch
        if self.batches is not None:
            self.batches.epoch = epoch

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.out.status != "complete":
            return
        x, y, xt, yt = self.data
        tr, te = (
            _evaluate(self.model, self.train.loss, x, y),
            _evaluate(self.model, self.train.loss, xt, yt),
        )
        self.out.epochs.append(
            {
                "epoch": epoch,
                "steps": self.step,
                "train_loss": tr["loss"],
                "test_loss": te["loss"],
                "train_accuracy": tr.get("accuracy", math.nan),
                "test_accuracy": te.get("accuracy", math.nan),
            }
        )


def _evaluate(model: keras.Model, loss: str, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    out = model(x, training=False)
    res = {"loss": float(ops.convert_to_numpy(make_loss(loss)(y, out)))}
    if loss == "bce":
        pred = ops.convert_to_numpy(out) > 0.5
        res["accuracy"] = float(np.mean(pred.astype(np.float32) == y))
    return res


def check_supported(variant: Variant, train: TrainSpec) -> None:
    """Refuse, with the fix, what the Keras backend does not build yet (never train silently
    something else than asked)."""
    m = variant.model
    unsupported = {
        "--norm": getattr(m, "norm", "none") != "none",
        "--residual": bool(getattr(m, "residual", False)),
        "outputs > 1": getattr(m, "outputs", 1) != 1,
        "--clip-norm": getattr(train, "clip_norm", None) is not None,
        f"--loss {train.loss}": train.loss not in ("mse", "bce"),
    }
    bad = [name for name, on in unsupported.items() if on]
    if bad:
        raise UsageError(
            f"--framework keras builds plain Dense MLPs with mse or bce loss; variant "
            f"{variant.name!r} asks for {', '.join(bad)}; use --framework torch for it"
        )


def train(
    variant: Variant,
    data: Dataset,
    train: TrainSpec,
    *,
    every: int = 1,
    log_dir: Path | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> Outcome:
    """Train one variant from ``train.seed``; stops early on a non-finite loss or Ctrl-C."""
    check_supported(variant, train)
    keras.utils.set_random_seed(train.seed)
    model = build_mlp(variant.model, data.n_features, train.seed)
    loss = make_loss(train.loss)
    model.compile(
        optimizer=make_optimizer(train.optimizer, train.lr),
        loss=loss,
        metrics=[_BatchLoss(make_loss(train.loss))],
    )
    rows = train.rows or len(data.x_train)
    x, y = data.x_train[:rows], data.y_train[:rows]
    batch = train.batch_size or rows
    rng = np.random.default_rng([train.seed, 1]) if train.shuffle else None
    orders = [
        rng.permutation(rows) if rng is not None else np.arange(rows) for _ in range(train.epochs)
    ]
    model.optimizer.build(model.trainable_variables)
    tap = _tap_first_kernel(model)
    mon = GradientMonitor(every=every, per_example=True, log_dir=log_dir)
    out = Outcome(mon)
    rows_cb = _Rows(out, (x, y, data.x_test, data.y_test), train, tap, on_step)
    rows_cb.batches = batches = _Batches(x, y, batch, orders)
    try:
        model.fit(
            batches,
            epochs=train.epochs,
            shuffle=False,
            callbacks=[mon, rows_cb],
            verbose=0,
        )
    except KeyboardInterrupt:
        out.status = "interrupted"
        out.message = f"interrupted by the user after {rows_cb.step} steps"
    finally:
        mon.close()
        mon.flush()
    return out
