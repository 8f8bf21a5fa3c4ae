"""Bad input and edge cases: each works, or fails with a clear message at the first batch."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras", reason="the keras extra is not installed")
tf = pytest.importorskip("tensorflow", reason="these tests use the TensorFlow backend")

from keras_reference import mlp  # noqa: E402

from gradprobe.errors import CaptureError  # noqa: E402
from gradprobe.keras import GradientMonitor  # noqa: E402

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="KERAS_BACKEND is not tensorflow"
)


def _fit(model, x, y, mon, **kw):
    kw = {"batch_size": 32, "epochs": 1, "shuffle": False, "verbose": 0, **kw}
    return model.fit(x, y, callbacks=[mon], **kw)


def _tape_norms(model, x, y, loss_fn):
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    return [float(np.linalg.norm(g)) for g in tape.gradient(loss, model.trainable_variables)]


def test_no_trainable_weights_fails_at_first_batch(data):
    model = mlp()
    for layer in model.layers:
        layer.trainable = False
    model.compile("sgd", "mse")
    with pytest.raises(CaptureError, match="no trainable weights"):
        _fit(model, *data, GradientMonitor())


def test_frozen_layer_shows_its_signal_but_no_gradient(data):
    model = mlp()
    model.layers[0].trainable = False
    model.compile(keras.optimizers.SGD(0.1), "mse")
    mon = GradientMonitor()
    _fit(model, *data, mon)
    first = model.layers[0].name
    assert first not in set(mon.to_pandas()["layer"])
    layers = mon.to_pandas("layers")
    row = layers[(layers["step"] == 0) & (layers["layer"] == first)].iloc[0]
    assert row["depth"] == 0 and row["backward_norm"] > 0


def test_subclassed_model(data):
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden = keras.layers.Dense(8, activation="tanh")
            self.out = keras.layers.Dense(1)

        def call(self, x):
            return self.out(self.hidden(x))

    keras.utils.set_random_seed(0)
    model = Net()
    model.compile(keras.optimizers.SGD(0.1), "mse")
    x, y = data
    model(x[:1])
    ref = _tape_norms(model, x[:32], y[:32], keras.losses.MeanSquaredError())
    mon = GradientMonitor()
    _fit(model, x, y, mon)
    p = mon.to_pandas()
    p0 = p[p["step"] == 0]
    np.testing.assert_allclose(p0["grad_norm"], ref, rtol=1e-5)
    assert list(p0["depth"]) == [0, 0, 1, 1]
    assert set(mon.to_pandas("layers")["activation"]) == {"tanh", ""}


def test_several_outputs_and_losses(data):
    x, y = data
    keras.utils.set_random_seed(0)
    inp = keras.Input((5,))
    h = keras.layers.Dense(8, activation="relu", name="trunk")(inp)
    a = keras.layers.Dense(1, name="a")(h)
    b = keras.layers.Dense(1, activation="sigmoid", name="b")(h)
    model = keras.Model(inp, {"a": a, "b": b})
    model.compile(keras.optimizers.SGD(0.1), loss={"a": "mse", "b": "binary_crossentropy"})
    yb = (y > 0).astype("float32")
    with tf.GradientTape() as tape:
        out = model(x[:32], training=True)
        loss = keras.losses.MeanSquaredError()(
            y[:32], out["a"]
        ) + keras.losses.BinaryCrossentropy()(yb[:32], out["b"])
    ref = [float(np.linalg.norm(g)) for g in tape.gradient(loss, model.trainable_variables)]
    mon = GradientMonitor()
    _fit(model, x, {"a": y, "b": yb}, mon)
    p0 = mon.to_pandas().query("step == 0")
    np.testing.assert_allclose(p0["grad_norm"], ref, rtol=1e-5)
    assert set(p0["layer"]) == {"trunk", "a", "b"}


def test_mixed_precision_records_unscaled_gradients(data):
    x, y = data
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = mlp(acts=("tanh", None))
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        ref = _tape_norms(model, x[:32], y[:32], keras.losses.MeanSquaredError())
        mon = GradientMonitor()
        _fit(model, x, y, mon)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    p0 = mon.to_pandas().query("step == 0")
    assert len(p0) == 4  # the scale is 32768: unscaled norms are O(1)
    np.testing.assert_allclose(p0["grad_norm"], ref, rtol=2e-2)


def test_gradient_accumulation_fails_clearly(data):
    model = mlp()
    model.compile(keras.optimizers.SGD(0.1, gradient_accumulation_steps=2), "mse")
    with pytest.raises(CaptureError, match="gradient_accumulation_steps=2"):
        _fit(model, *data, GradientMonitor())


def test_several_steps_per_execution_fail_clearly(data):
    model = mlp()
    model.compile(keras.optimizers.SGD(0.1), "mse", steps_per_execution=2)
    with pytest.raises(CaptureError, match="steps_per_execution"):
        _fit(model, *data, GradientMonitor())


def test_train_step_that_bypasses_the_optimizer_fails_at_first_batch(data):
    class Odd(keras.Sequential):
        def train_step(self, batch):
            x, y = batch
            with tf.GradientTape() as tape:
                loss = keras.losses.MeanSquaredError()(y, self(x, training=True))
            for g, v in zip(
                tape.gradient(loss, self.trainable_variables), self.trainable_variables, strict=True
            ):
                v.assign_sub(0.1 * g)
            return {"loss": loss}

    keras.utils.set_random_seed(0)
    model = Odd([keras.Input((5,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    with pytest.raises(CaptureError, match="never called"):
        _fit(model, *data, GradientMonitor())
    assert "call" not in vars(model.layers[0])


def test_bad_arguments():
    from gradprobe.errors import UsageError

    with pytest.raises(UsageError, match="every"):
        GradientMonitor(every=0)
    with pytest.raises(UsageError, match="probe"):
        GradientMonitor(probe=[1, 2])
    with pytest.raises(UsageError, match="unknown table"):
        GradientMonitor().to_pandas("nope")
