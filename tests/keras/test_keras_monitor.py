"""The Keras monitor against eager GradientTape references, in fit's compiled step."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras", reason="the keras extra is not installed")
tf = pytest.importorskip("tensorflow", reason="these tests use the TensorFlow backend")

from keras_reference import mlp, reference  # noqa: E402

from gradprobe.errors import CaptureError  # noqa: E402
from gradprobe.keras import GradientMonitor  # noqa: E402

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="KERAS_BACKEND is not tensorflow"
)


def _saturating_model():
    model = mlp()
    k, b = model.layers[0].get_weights()
    model.layers[0].set_weights([k * 8, b])  # some sigmoid units saturate
    return model


def _by(frame, **eq):
    for k, v in eq.items():
        frame = frame[frame[k] == v]
    assert len(frame) == 1, eq
    return frame.iloc[0]


def test_fit_step_matches_eager_reference(data):
    x, y = data
    model = _saturating_model()
    ref = reference(model, x[:32], y[:32])
    w0 = [v.numpy().astype(np.float64) for v in model.trainable_variables]
    mon = GradientMonitor(per_example=True)
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, callbacks=[mon], verbose=0)
    params, layers = mon.to_pandas(), mon.to_pandas("layers")
    assert sorted(params["step"].unique()) == [0, 1]
    for depth, r in enumerate(ref):
        name = model.layers[depth].name
        for i, param in enumerate(("kernel", "bias")):
            g = r[param]
            row = _by(params, step=0, layer=name, param=param)
            assert row["depth"] == depth and row["numel"] == g.size
            np.testing.assert_allclose(row["grad_norm"], np.linalg.norm(g), rtol=1e-5)
            np.testing.assert_allclose(row["grad_mean"], g.mean(), rtol=1e-4, atol=1e-9)
            np.testing.assert_allclose(row["grad_std"], g.std(), rtol=1e-4)
            np.testing.assert_allclose(row["grad_max_abs"], np.abs(g).max(), rtol=1e-5)
            np.testing.assert_allclose(row["weight_norm"], np.linalg.norm(w0[2 * depth + i]))
            np.testing.assert_allclose(row["update_norm"], 0.1 * np.linalg.norm(g), rtol=1e-4)
            assert row["grad_nonfinite"] == 0
        np.testing.assert_allclose(
            _by(params, step=0, layer=name, param="kernel")["pe_grad_rms"],
            r["pe_grad_rms"],
            rtol=1e-5,
        )
        lrow = _by(layers, step=0, layer=name)
        assert lrow["activation"] == r["activation"] and lrow["kind"] == "Dense"
        for col in ("act_mean", "act_std", "act_rms", "backward_norm"):
            np.testing.assert_allclose(lrow[col], r[col], rtol=1e-5, atol=1e-9, err_msg=col)
        for col in ("saturated_frac", "dead_frac"):
            np.testing.assert_allclose(lrow[col], r[col], err_msg=col)
    assert _by(layers, step=0, layer=model.layers[0].name)["saturated_frac"] > 0


def test_every_records_chosen_steps_and_trains_like_unwatched(data):
    x, y = data
    watched, plain = mlp(), mlp()
    mon = GradientMonitor(every=3)
    watched.fit(x, y, batch_size=8, epochs=1, shuffle=False, callbacks=[mon], verbose=0)
    plain.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert sorted(mon.to_pandas()["step"].unique()) == [0, 3, 6]
    assert sorted(mon.to_pandas("layers")["step"].unique()) == [0, 3, 6]
    assert mon.steps_seen == 8
    for a, b in zip(watched.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_close_restores_the_model_and_optimizer(data):
    x, y = data
    model = mlp()
    act = model.layers[0].activation
    mon = GradientMonitor()
    model.fit(x, y, batch_size=32, epochs=1, callbacks=[mon], verbose=0)
    for layer in model.layers:
        assert "call" not in vars(layer)
    assert model.layers[0].activation is act
    assert "apply" not in vars(model.optimizer)
    assert model.train_function is None
    rows = len(mon.to_pandas())
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert len(mon.to_pandas()) == rows


def test_record_in_a_custom_loop_matches_tape(data):
    x, y = data
    model = mlp()
    ref = reference(model, x[:32], y[:32])
    mon = GradientMonitor()
    with tf.GradientTape() as tape:
        loss = keras.losses.MeanSquaredError()(y[:32], model(x[:32]))
    mon.record(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
    params = mon.to_pandas()
    assert list(params["param"][:2]) == ["kernel", "bias"]
    norms = params[params["param"] == "kernel"].sort_values("depth")["grad_norm"]
    np.testing.assert_allclose(norms, [np.linalg.norm(r["kernel"]) for r in ref], rtol=1e-5)
    assert params["update_norm"].isna().all()


def test_record_inside_tf_function_fails_clearly(data):
    model = mlp()
    mon = GradientMonitor()

    @tf.function
    def step():
        mon.record([tf.zeros_like(v) for v in model.trainable_variables], model.trainable_variables)

    with pytest.raises(CaptureError, match="tf.function"):
        step()


def test_probe_measures_a_fixed_batch_at_chosen_steps(data):
    x, y = data
    model = mlp()
    ref = reference(model, x[:32], y[:32])
    mon = GradientMonitor(probe=(x[:32], y[:32]), probe_steps=[0, 2])
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, callbacks=[mon], verbose=0)
    params, layers = mon.to_pandas(), mon.to_pandas("layers")
    assert sorted(params["step"].unique()) == [0, 2]
    first = params[(params["step"] == 0) & (params["param"] == "kernel")].sort_values("depth")
    np.testing.assert_allclose(
        first["grad_norm"], [np.linalg.norm(r["kernel"]) for r in ref], rtol=1e-5
    )
    b = layers[layers["step"] == 0].sort_values("depth")["backward_norm"]
    np.testing.assert_allclose(b, [r["backward_norm"] for r in ref], rtol=1e-5)


def test_log_dir_flushes_parquet_parts(tmp_path, data):
    x, y = data
    model = mlp()
    mon = GradientMonitor(log_dir=tmp_path)
    model.fit(x, y, batch_size=32, epochs=1, callbacks=[mon], verbose=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "layers-00000.parquet",
        "params-00000.parquet",
    ]
    assert len(mon.to_pandas()) == 16


@pytest.mark.parametrize(
    "make_opt",
    [
        pytest.param(lambda: keras.optimizers.SGD(0.2), id="sgd"),
        pytest.param(
            lambda: keras.optimizers.SGD(
                keras.optimizers.schedules.ExponentialDecay(0.3, decay_steps=1, decay_rate=0.5)
            ),
            id="sgd-schedule",
        ),
        pytest.param(lambda: keras.optimizers.SGD(0.2, clipnorm=0.05), id="sgd-clipnorm"),
        pytest.param(lambda: keras.optimizers.SGD(0.2, momentum=0.9), id="sgd-momentum"),
        pytest.param(lambda: keras.optimizers.Adam(0.05), id="adam"),
    ],
)
def test_update_norm_is_the_change_of_the_weights(data, make_opt):
    # plain SGD takes lr * ||g|| (no second read of the weights); the others the weights' change
    x, y = data
    model = mlp()
    model.compile(make_opt(), "mse")
    mon = GradientMonitor()
    changes = []
    for _ in range(3):  # one step per fit: the whole set is one batch
        before = [w.astype(np.float64) for w in model.get_weights()]
        model.fit(x, y, batch_size=len(x), epochs=1, callbacks=[mon], verbose=0)
        after = [w.astype(np.float64) for w in model.get_weights()]
        changes.append([np.linalg.norm(a - b) for a, b in zip(after, before, strict=True)])
    params = mon.to_pandas()
    for step, want in enumerate(changes):
        rows = params[params["step"] == step]
        assert len(rows) == len(want)
        got = [
            _by(rows, layer=layer.name, param=param)["update_norm"]
            for layer in model.layers
            for param in ("kernel", "bias")  # the order of get_weights()
        ]
        np.testing.assert_allclose(got, want, rtol=1e-4)


def test_a_ctrl_c_while_kept_steps_become_rows_loses_none(data, monkeypatch, ctrl_c_in):
    import gradprobe.keras.monitor as monitor_mod

    monkeypatch.setattr(monitor_mod, "PENDING_STEPS", 4)
    hits = ctrl_c_in(GradientMonitor, "_param_rows")
    x, y = data
    model = mlp()
    mon = GradientMonitor(every=1)
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=8, epochs=3, shuffle=False, callbacks=[mon], verbose=0)
    mon.close()  # keeps what was recorded (see GradientMonitor.close)
    assert hits
    steps = sorted(mon.to_pandas()["step"].unique())
    assert len(steps) >= 4 and steps == list(range(len(steps)))
    assert sorted(mon.to_pandas("layers")["step"].unique()) == steps
