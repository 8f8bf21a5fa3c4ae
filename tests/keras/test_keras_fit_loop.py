"""The monitor inside fit's loop: no per-batch callbacks, the device ring, fit's life cycle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

keras = pytest.importorskip("keras", reason="the keras extra is not installed")
tf = pytest.importorskip("tensorflow", reason="these tests use the TensorFlow backend")

from keras_reference import mlp, reference  # noqa: E402

from gradprobe.keras import GradientMonitor  # noqa: E402
from gradprobe.keras import monitor as monitor_module  # noqa: E402

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="KERAS_BACKEND is not tensorflow"
)

BATCH_HOOKS = (
    "on_batch_begin",
    "on_batch_end",
    "on_train_batch_begin",
    "on_train_batch_end",
)


def _fit(model, x, y, mon, **kw):
    kw = {"batch_size": 8, "epochs": 1, "shuffle": False, "verbose": 0, **kw}
    return model.fit(x, y, callbacks=[mon], **kw)


def _records(mon):
    return mon.to_pandas(), mon.to_pandas("layers")


def test_no_batch_level_callback_methods_so_keras_dispatch_is_unchanged():
    mon = GradientMonitor()
    for hook in BATCH_HOOKS:
        assert getattr(type(mon), hook) is getattr(keras.callbacks.Callback, hook), hook
    # Keras dispatches batch ends asynchronously (where its backend allows) unless a callback
    # implements them: with the monitor it decides as with a callback that does nothing
    watched = keras.callbacks.CallbackList([mon])
    idle = keras.callbacks.CallbackList([keras.callbacks.Callback()])
    assert watched._async_train == idle._async_train


@pytest.fixture
def device_path(monkeypatch):
    """Reductions on the device and the ring, as on an accelerator (on CPU the host reduces)."""
    monkeypatch.setattr(monitor_module, "HOST", False)


def test_ring_that_wraps_many_times_gives_the_same_records(data, monkeypatch, device_path):
    x, y = data
    big = GradientMonitor(every=1)
    _fit(mlp(), x, y, big, epochs=2)  # 16 steps: one read at the first step, then at epoch ends
    monkeypatch.setattr(monitor_module, "RING_ROWS", 3)
    small = GradientMonitor(every=1)
    _fit(mlp(), x, y, small, epochs=2)
    for a, b in zip(_records(big), _records(small), strict=True):  # two models: layer names differ
        pd.testing.assert_frame_equal(a.drop(columns="layer"), b.drop(columns="layer"))
    assert sorted(small.to_pandas()["step"].unique()) == list(range(16))


def test_ring_read_when_full_keeps_every_recorded_step(data, monkeypatch, device_path):
    x, y = data
    monkeypatch.setattr(monitor_module, "RING_ROWS", 2)
    mon = GradientMonitor(every=3)
    _fit(mlp(), x, y, mon, epochs=3)  # 24 steps, 8 recorded, the ring holds 2
    assert sorted(mon.to_pandas()["step"].unique()) == list(range(0, 24, 3))
    assert sorted(mon.to_pandas("layers")["step"].unique()) == list(range(0, 24, 3))


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("host", [True, False], ids=["host", "device"])
def test_interrupted_fit_keeps_what_was_recorded(data, monkeypatch, host):
    monkeypatch.setattr(monitor_module, "HOST", host)
    x, y = data
    model = mlp()
    mon = GradientMonitor(every=1)
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=8, epochs=1, callbacks=[mon, _Interrupt(5)], verbose=0)
    assert sorted(mon.to_pandas()["step"].unique()) == [0, 1, 2, 3, 4]  # read without close
    mon.close()
    assert sorted(mon.to_pandas()["step"].unique()) == [0, 1, 2, 3, 4]
    for layer in model.layers:
        assert "call" not in vars(layer)
    assert "train_step" not in vars(model) and "apply" not in vars(model.optimizer)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # trains unwatched afterwards
    assert mon.steps_seen == 5 and len(mon.to_pandas()) == 5 * 8


def test_fit_twice_with_evaluate_and_predict_between(data):
    x, y = data
    model = mlp()
    mon = GradientMonitor(every=2)
    _fit(model, x, y, mon)
    loss = model.evaluate(x, y, verbose=0)
    pred = model.predict(x, verbose=0)
    assert np.isfinite(loss) and pred.shape == (64, 1)
    _fit(model, x, y, mon, validation_data=(x[:16], y[:16]))
    assert mon.steps_seen == 16
    assert sorted(mon.to_pandas()["step"].unique()) == list(range(0, 16, 2))
    assert model.train_function is None


def test_jit_compiled_fit_matches_the_eager_reference(data):
    x, y = data
    model = mlp()
    ref = reference(model, x[:32], y[:32])
    model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=True)
    mon = GradientMonitor()
    _fit(model, x, y, mon, batch_size=32)
    p0 = mon.to_pandas().query("step == 0 and param == 'kernel'").sort_values("depth")
    np.testing.assert_allclose(
        p0["grad_norm"], [np.linalg.norm(r["kernel"]) for r in ref], rtol=1e-5
    )
    b0 = mon.to_pandas("layers").query("step == 0").sort_values("depth")["backward_norm"]
    np.testing.assert_allclose(b0, [r["backward_norm"] for r in ref], rtol=1e-5)


def test_zero_and_nonfinite_counts_are_exact_with_nan_and_inf(data):
    model = mlp()
    grads = [np.zeros(v.shape, "float32") + 0.5 for v in model.trainable_variables]
    k = grads[0].reshape(-1)
    k[:3] = 0.0
    k[3:5] = np.nan
    k[5] = np.inf
    k[6] = -np.inf
    grads[2].reshape(-1)[:2] = 0.0  # a kernel of the same shape group
    mon = GradientMonitor()
    mon.record([tf.constant(g) for g in grads], model.trainable_variables)
    p = mon.to_pandas()
    numel = p["numel"].to_numpy()
    np.testing.assert_array_equal(p["grad_nonfinite"], [4, 0, 0, 0, 0, 0, 0, 0])
    zeros = np.array([3, 0, 2, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(p["grad_zero_frac"], zeros / numel)
    assert np.isnan(p["grad_norm"].iloc[0]) and p["grad_norm"].iloc[1] > 0
