"""The host path (one pack per recorded step, reduced by the fused C pass) and the budget."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

keras = pytest.importorskip("keras", reason="the keras extra is not installed")
tf = pytest.importorskip("tensorflow", reason="these tests use the TensorFlow backend")

from keras_reference import mlp, reference  # noqa: E402

from gradprobe import _fusednp  # noqa: E402
from gradprobe.budget import Budget, Every, Tier  # noqa: E402
from gradprobe.keras import GradientMonitor, save_run  # noqa: E402
from gradprobe.keras import monitor as monitor_module  # noqa: E402

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="KERAS_BACKEND is not tensorflow"
)


def _records(make_opt, data, host, monkeypatch, batch=16, **kw):
    monkeypatch.setattr(monitor_module, "HOST", host)
    x, y = data
    model = mlp(acts=("sigmoid", "relu", "tanh", None))
    k, b = model.layers[0].get_weights()
    model.layers[0].set_weights([k * 8, b])  # some sigmoid units saturate
    model.compile(make_opt(), "mse")
    mon = GradientMonitor(every=1, per_example=True, **kw)
    model.fit(x, y, batch_size=batch, epochs=2, shuffle=False, callbacks=[mon], verbose=0)
    return mon, mon.to_pandas(), mon.to_pandas("layers")


def _step_inputs(rng, with_after):
    """Raw tensors of one step of ``mlp(width=16)`` with 3 layers, with zeros, NaN and inf."""
    from gradprobe.keras._activations import of_function
    from gradprobe.keras._capture import LayerAcc

    shapes = [(5, 16), (16,), (16, 16), (16,), (16, 1), (1,)]
    grads = [(rng.normal(size=s) * 10.0 ** rng.integers(-6, 3)).astype("float32") for s in shapes]
    grads[0].reshape(-1)[:7] = 0.0
    grads[2].reshape(-1)[3] = np.nan
    grads[3].reshape(-1)[1] = np.inf
    before = [rng.normal(size=s).astype("float32") for s in shapes]
    after = [w - np.float32(0.1) * g for w, g in zip(before, grads, strict=True)]
    sig, relu = of_function(keras.activations.sigmoid), of_function(keras.activations.relu)
    accs = {
        0: LayerAcc(outs=[(tf.sigmoid(rng.normal(size=(12, 16)) * 8), sig)]),
        1: LayerAcc(outs=[(tf.nn.relu(rng.normal(size=(12, 16)) - 1.5), relu)]),
        2: LayerAcc(outs=[(tf.constant(rng.normal(size=(12, 1))), None)]),
    }
    for j, acc in accs.items():
        acc.outs = [(tf.cast(o, "float32"), a) for o, a in acc.outs]
        acc.bwd = [tf.constant(rng.normal(size=(12, 16 if j < 2 else 1)).astype("float32"))]
    return grads, before, after if with_after else None, accs


@pytest.mark.parametrize("with_after", [False, True], ids=["lr-times-g", "weights-after"])
def test_host_pass_gives_the_device_reductions_on_the_same_tensors(with_after):
    from gradprobe.keras import _host as H
    from gradprobe.keras import _reduce as R
    from gradprobe.keras._capture import Tracer

    grads, before, after, accs = _step_inputs(np.random.default_rng(0), with_after)
    model = mlp(acts=("sigmoid", "relu", None), width=16)
    variables = model.trainable_variables
    mon = GradientMonitor(every=1)
    mon._adopt(variables)
    mon._layers = [layer.name for layer in model.layers]
    lr_sq = None if with_after else tf.constant(0.01, "float64")
    gs = [tf.constant(g) for g in grads]
    ws = [tf.constant(w) for w in before]
    packed = H.pack(
        len(variables),
        3,
        list(range(6)),
        gs,
        H.flat(ws, "float32"),
        None if after is None else [tf.constant(a) for a in after],
        lr_sq,
        accs,
        {},
        "float32",
    )
    assert packed is not None
    lay, bufs = packed
    host = H.reduce_step(lay, {k: v.numpy() for k, v in bufs.items()})
    for v, w in zip(variables, after or before, strict=True):
        v.assign(w)  # the device path reads the weights after the update from the variables
    named = {mon._layers[j]: acc for j, acc in accs.items()}
    stacked = R.stack_groups(ws, R.shape_groups(ws), copy=False)
    device = mon._step_vector(
        gs, list(variables), stacked, True, Tracer.reduce_raw(named), lr_sq
    ).numpy()
    # ||after - before||^2: the host takes each difference in float64 (exact), the device in
    # float32 (rounded), so that column agrees to float32 rounding only
    usq = np.zeros_like(host, dtype=bool)
    usq[5 : 6 * 8 : 8] = with_after
    np.testing.assert_allclose(host[~usq], device[~usq], rtol=1e-12, atol=0, equal_nan=True)
    np.testing.assert_allclose(host[usq], device[usq], rtol=1e-6)
    assert np.isnan(host).sum() == np.isnan(device).sum()


@pytest.mark.parametrize(
    "make_opt",
    [
        pytest.param(lambda: keras.optimizers.SGD(0.1), id="sgd"),
        pytest.param(lambda: keras.optimizers.Adam(0.01), id="adam"),
    ],
)
@pytest.mark.parametrize("batch", [16, 24], ids=["full-batches", "partial-last-batch"])
def test_host_pass_in_fit_gives_the_device_records(data, monkeypatch, make_opt, batch):
    # two fits trace two graphs whose float32 gradients differ in the last bits
    host, p1, l1 = _records(make_opt, data, True, monkeypatch, batch)
    device, p0, l0 = _records(make_opt, data, False, monkeypatch, batch)
    assert host._layouts and not device._layouts  # each path was the one taken
    assert len(p1) == len(p0) and len(l1) == len(l0) and len(l1) > 0
    assert p1[["step", "param", "depth", "tier"]].equals(p0[["step", "param", "depth", "tier"]])
    assert l1[["step", "depth", "tier"]].equals(l0[["step", "depth", "tier"]])
    # Adam divides by sqrt(v): trajectories that differ in the last bits part after a few steps
    last = 7 if make_opt().__class__ is keras.optimizers.SGD else 0
    for a, b in ((p1, p0), (l1, l0)):
        a, b = a[a["step"] <= last], b[b["step"] <= last]
        pd.testing.assert_frame_equal(a.drop(columns="layer"), b.drop(columns="layer"), rtol=1e-4)


def test_host_pass_without_the_c_module_gives_the_same_numbers(data, monkeypatch):
    _, p1, l1 = _records(lambda: keras.optimizers.SGD(0.1), data, True, monkeypatch)
    monkeypatch.setattr(_fusednp, "ENABLED", False)
    _, p0, l0 = _records(lambda: keras.optimizers.SGD(0.1), data, True, monkeypatch)
    for a, b in ((p1, p0), (l1, l0)):
        pd.testing.assert_frame_equal(a.drop(columns="layer"), b.drop(columns="layer"), rtol=1e-12)


def test_host_pass_matches_the_eager_reference(data, monkeypatch):
    x, y = data
    monkeypatch.setattr(monitor_module, "HOST", True)
    model = mlp()
    ref = reference(model, x[:32], y[:32])
    mon = GradientMonitor(every=1)
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, callbacks=[mon], verbose=0)
    assert mon._layouts
    params, layers = mon.to_pandas(), mon.to_pandas("layers")
    for depth, r in enumerate(ref):
        at = params[(params["step"] == 0) & (params["layer"] == model.layers[depth].name)]
        got = at[at["param"] == "kernel"].iloc[0]
        np.testing.assert_allclose(got["grad_norm"], np.linalg.norm(r["kernel"]), rtol=1e-5)
        lrow = layers[(layers["step"] == 0) & (layers["layer"] == model.layers[depth].name)].iloc[0]
        for col in ("act_rms", "backward_norm", "saturated_frac", "dead_frac"):
            np.testing.assert_allclose(lrow[col], r[col], rtol=1e-5, atol=1e-9, err_msg=col)


def test_default_is_the_budget_and_every_forces_a_fixed_schedule():
    assert isinstance(GradientMonitor().schedule, Budget)
    assert GradientMonitor().schedule.fraction == 0.05
    assert GradientMonitor(budget=0.2).schedule.fraction == 0.2
    assert GradientMonitor(every=4).schedule == Every(4, Tier.ALL)
    assert GradientMonitor(budget=None).schedule == Every(1, Tier.ALL)
    assert GradientMonitor(activations=False, backward=False).schedule.top == Tier.GRADIENTS


class _Tiers:
    """A schedule that records what it is told, step by step."""

    def __init__(self, tiers):
        self.tiers, self.done_steps = tiers, []

    def tier(self, step):
        return self.tiers[step % len(self.tiers)]

    def done(self, step):
        self.done_steps.append(step)


def test_mixed_tiers_record_what_each_step_asked_for(data, monkeypatch):
    x, y = data
    model = mlp()
    mon = GradientMonitor()
    mon.schedule = _Tiers([Tier.ALL, Tier.GRADIENTS, Tier.NONE, Tier.GRADIENTS])
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, callbacks=[mon], verbose=0)
    params, layers = mon.to_pandas(), mon.to_pandas("layers")
    assert mon.schedule.done_steps == list(range(3, 8))  # steps 0-2 traced their functions
    assert sorted(params["step"].unique()) == [0, 1, 3, 4, 5, 7]
    assert sorted(layers["step"].unique()) == [0, 4]
    tiers = params.groupby("step")["tier"].first().to_dict()
    assert tiers == {
        0: "all",
        1: "gradients",
        3: "gradients",
        4: "all",
        5: "gradients",
        7: "gradients",
    }
    assert set(layers["tier"]) == {"all"}


def test_steps_that_trace_or_start_an_epoch_are_not_timed_for_the_budget(data):
    # a tracing step took ~1 s: timed as a step that records nothing, it made watching look
    # free, and the budget recorded everything on every step (1.34x instead of 1.05x)
    x, y = data
    mon = GradientMonitor()
    mon.schedule = _Tiers([Tier.NONE, Tier.ALL])
    mlp().fit(x, y, batch_size=16, epochs=3, shuffle=False, callbacks=[mon], verbose=0)
    assert mon.schedule.done_steps == [2, 3, 5, 6, 7, 9, 10, 11]  # not 0, 1 (traced), 4, 8


def test_every_records_the_same_as_before_on_the_device_path(data, monkeypatch):
    monkeypatch.setattr(monitor_module, "HOST", False)
    x, y = data
    mon = GradientMonitor()
    mon.schedule = _Tiers([Tier.ALL, Tier.GRADIENTS])
    mlp().fit(x, y, batch_size=8, epochs=1, shuffle=False, callbacks=[mon], verbose=0)
    params, layers = mon.to_pandas(), mon.to_pandas("layers")
    assert sorted(params["step"].unique()) == list(range(8))
    assert sorted(layers["step"].unique()) == [0, 2, 4, 6]
    assert set(params.query("step % 2 == 1")["tier"]) == {"gradients"}


@pytest.mark.slow
def test_budget_run_with_mixed_tiers_is_diagnosed(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4096, 5)).astype("float32"), rng.normal(size=(4096, 1))
    model = mlp()
    mon = GradientMonitor()  # the default budget
    model.fit(x, y.astype("float32"), batch_size=16, epochs=1, callbacks=[mon], verbose=0)
    params, layers = mon.to_pandas(), mon.to_pandas("layers")
    assert set(params["tier"]) == {"all", "gradients"}
    assert params["step"].nunique() > layers["step"].nunique() > 1
    assert set(layers["step"]) <= set(params.query("tier == 'all'")["step"])
    save_run(mon, tmp_path / "run", plots=False)
    out = subprocess.run(
        [sys.executable, "-m", "gradprobe", "diagnose", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode in (0, 1), out.stderr  # 1: findings at error severity
    assert "Traceback" not in out.stderr


def test_reducer_thread_gives_the_rows_of_inline_reduction(data, monkeypatch):
    monkeypatch.setattr(monitor_module, "THREAD", True)
    _, p1, l1 = _records(lambda: keras.optimizers.SGD(0.1), data, True, monkeypatch)
    monkeypatch.setattr(monitor_module, "THREAD", False)
    _, p0, l0 = _records(lambda: keras.optimizers.SGD(0.1), data, True, monkeypatch)
    for a, b in ((p1, p0), (l1, l0)):
        pd.testing.assert_frame_equal(a.drop(columns="layer"), b.drop(columns="layer"))


def test_reducer_error_is_raised_on_the_fit_thread():
    from gradprobe.keras import _host as H

    reducer = H.Reducer()
    reducer.put(0, 2, None, {"g": np.zeros(3)})  # no extras, no layout: the worker fails
    with pytest.raises(KeyError):
        reducer.take(wait=True)
    reducer.close()
    assert reducer.take(wait=True) == []


def test_loss_scale_optimizer_keeps_its_reductions_on_the_device(data):
    # its update runs inside a condition (skipped on inf/NaN): the numbers stay in that branch
    x, y = data
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = mlp(acts=("tanh", None))
        mon = GradientMonitor(every=1)
        model.fit(x, y, batch_size=32, epochs=1, shuffle=False, callbacks=[mon], verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert not mon._host and not mon._layouts
    assert sorted(mon.to_pandas()["step"].unique()) == [0, 1]
