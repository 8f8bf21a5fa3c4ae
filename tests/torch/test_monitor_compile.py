"""The real monitor on ``torch.compile``'d models: no graph break caused by gradprobe, and the
numbers of the same model watched eagerly (same seeds, same data) -- the slow reference.

Models (from ``test_compile``): an MLP (ReLU, Tanh, ReLU(inplace=True)) and a small CNN
(BatchNorm, ReLU(inplace=True), a functional tanh). Fast tests use ``backend="aot_eager"``; one
slow test uses inductor.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch._dynamo as dynamo
from test_compile import _data, _make, _train

import gradprobe

STEPS = 4


def _run(
    kind: str, order: str | None, every: int = 1, backend: str = "aot_eager", steps: int = STEPS
) -> tuple[gradprobe.Monitor, Any, torch.optim.Optimizer]:
    """Train ``kind`` watched: compiled ``before``/``after`` watch, or eagerly (None)."""
    dynamo.reset()
    dynamo.utils.counters.clear()
    model = _make(kind)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    if order == "before":
        run: Any = torch.compile(model, backend=backend)
        mon = gradprobe.watch(run, opt, every=every)
    else:
        mon = gradprobe.watch(model, opt, every=every)
        run = torch.compile(model, backend=backend) if order == "after" else model
    x, y = _data(model)
    _train(run, opt, steps, x, y)
    return mon, run, opt


def _graph_breaks() -> dict[str, int]:
    return dict(dynamo.utils.counters["graph_break"])


def _same(
    got: pd.DataFrame, want: pd.DataFrame, rtol: float, cols: list[str], atol: float = 1e-12
) -> None:
    assert len(got) == len(want) > 0
    keys = ["step", "layer", "depth"]
    assert got[keys].values.tolist() == want[keys].values.tolist()
    for col in cols:
        a, b = got[col].to_numpy(np.float64), want[col].to_numpy(np.float64)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=col)
        ok = ~np.isnan(b)
        np.testing.assert_allclose(a[ok], b[ok], rtol=rtol, atol=atol, err_msg=col)


LAYER_COLS = ["act_mean", "act_std", "act_rms", "saturated_frac", "dead_frac", "backward_norm"]


def _check_against_eager(mon: gradprobe.Monitor, kind: str, every: int, steps: int) -> None:
    eager, _, _ = _run(kind, None, every, steps=steps)
    got_l, want_l = mon.to_pandas("layers"), eager.to_pandas("layers")
    _same(got_l, want_l, 1e-6, LAYER_COLS)
    assert got_l["activation"].tolist() == want_l["activation"].tolist()
    got_p, want_p = mon.to_pandas(), eager.to_pandas()
    _same(got_p, want_p, 1e-10, ["grad_norm", "weight_norm", "update_ratio"])


@pytest.mark.parametrize("every", [1, 2])
@pytest.mark.parametrize("order", ["before", "after"])
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_watched_compiled_model_has_no_graph_break_and_the_eager_numbers(
    kind: str, order: str, every: int
) -> None:
    mon, _, _ = _run(kind, order, every)
    assert _graph_breaks() == {}
    _check_against_eager(mon, kind, every, STEPS)
    assert sorted(set(mon.to_pandas()["step"])) == list(range(0, STEPS, every))


def _exact_run(backend: str) -> None:
    """grad_norm against ``p.grad`` in float64 read in the same step (a pre-hook registered
    later), with a compiled backward whose rounding differs from the eager one."""
    dynamo.reset()
    dynamo.utils.counters.clear()
    model = _make("cnn")
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    run = torch.compile(model, backend=backend)
    mon = gradprobe.watch(run, opt)
    want: list[dict[str, float]] = []
    names = {p: n for n, p in model.named_parameters()}
    opt.register_step_pre_hook(
        lambda o, a, k: want.append({names[p]: float(p.grad.double().norm()) for p in names})
    )
    x, y = _data(model)
    _train(run, opt, 3, x, y)
    assert _graph_breaks() == {}
    df = mon.to_pandas()
    assert len(want) == 3
    for step, ref in enumerate(want):
        rows = df[df["step"] == step]
        assert len(rows) == len(ref)
        for layer, param, got in zip(rows["layer"], rows["param"], rows["grad_norm"], strict=True):
            assert got == pytest.approx(ref[f"{layer}.{param}"], rel=1e-10, abs=1e-300)


def test_grad_norm_of_a_watched_compiled_model_is_exact() -> None:
    _exact_run("aot_eager")


def test_every_n_on_a_watched_compiled_model_compiles_each_kind_of_step_once() -> None:
    mon, run, opt = _run("mlp", "after", every=2)
    dynamo.utils.counters.clear()
    x, y = _data(_make("mlp"))
    _train(run, opt, 6, x, y)
    assert dynamo.utils.counters["stats"]["unique_graphs"] == 0
    assert _graph_breaks() == {}
    assert sorted(set(mon.to_pandas()["step"])) == [0, 2, 4, 6, 8]


def test_no_grad_forward_of_a_watched_compiled_model_holds_nothing() -> None:
    mon, run, _ = _run("cnn", "before", steps=1)
    with torch.no_grad():
        run(_data(_make("cnn"))[0])
    assert mon._capture._found == []
    assert all(p.grad is None for p in mon._capture.probes.values())
    assert _graph_breaks() == {}


@pytest.mark.parametrize("order", ["before", "after"])
def test_detached_compiled_model_trains_as_a_bare_one(order: str) -> None:
    mon, run, opt = _run("cnn", order, steps=2)
    mon.detach()
    x, y = _data(_make("cnn"))
    _train(run, opt, 2, x, y)
    assert mon._capture._found == []
    assert all(p.grad is None for p in mon._capture.probes.values())
    assert mon.to_pandas()["step"].max() == 1
    bare = _make("cnn")
    bare_opt = torch.optim.SGD(bare.parameters(), lr=0.05)
    _train(torch.compile(bare, backend="aot_eager"), bare_opt, 4, x, y)
    for p, q in zip(run.parameters(), bare.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert _graph_breaks() == {}


def test_watching_a_model_whose_compiled_code_already_ran_resets_dynamo() -> None:
    """Dynamo does not guard on empty hook dicts: without the reset in ``watch`` the compiled
    graph without hooks would keep running and no layer would be recorded."""
    dynamo.reset()
    model = _make("mlp")
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    run = torch.compile(model, backend="aot_eager")
    x, y = _data(model)
    _train(run, opt, 1, x, y)
    mon = gradprobe.watch(run, opt)
    _train(run, opt, 2, x, y)
    layers = mon.to_pandas("layers")
    assert len(layers) == 8 and not layers["backward_norm"].isna().any()
    assert not layers["act_rms"].isna().any()


def test_module_compile_in_place_is_watched_without_graph_break() -> None:
    dynamo.reset()
    dynamo.utils.counters.clear()
    model = _make("mlp")
    model.compile(backend="aot_eager")
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = gradprobe.watch(model, opt)
    x, y = _data(model)
    _train(model, opt, 2, x, y)
    assert _graph_breaks() == {}
    layers = mon.to_pandas("layers")
    assert len(layers) == 8 and not layers["backward_norm"].isna().any()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_inductor_compiled_watched_model_has_no_graph_break_and_the_eager_numbers(
    kind: str,
) -> None:
    """Inductor's kernels round differently from eager ones: the numbers agree with the eager
    twin to float32 rounding, and grad_norm is exact against the compiled model's own p.grad."""
    mon, _, _ = _run(kind, "after", backend="inductor", steps=2)
    assert _graph_breaks() == {}
    eager, _, _ = _run(kind, None, steps=2)
    _same(mon.to_pandas("layers"), eager.to_pandas("layers"), 1e-5, LAYER_COLS)
    # atol: the bias before BatchNorm has a gradient of rounding noise only (~1e-8)
    _same(mon.to_pandas(), eager.to_pandas(), 1e-5, ["grad_norm"], atol=1e-6)
    if kind == "cnn":
        _exact_run("inductor")


def _accumulate(run: Any, opt: torch.optim.Optimizer, x: Any, y: Any, k: int, steps: int) -> None:
    n = x.shape[0] // k
    for _ in range(steps):
        opt.zero_grad()
        for i in range(k):
            ((run(x[i * n : (i + 1) * n]) - y[i * n : (i + 1) * n]) ** 2).mean().backward()
        opt.step()


def test_gradient_accumulation_on_a_watched_compiled_model_reuses_its_graphs() -> None:
    """Ten micro-batches a step: each forward enters with the same monitor state, so the graphs
    of the second micro-batch serve all later ones (one graph per micro-batch would pass
    dynamo's recompile limit and drop the model to eager), and every micro-batch counts."""
    k, steps = 10, 2
    got = []
    for compiled in (True, False):
        dynamo.reset()
        dynamo.utils.counters.clear()
        model = _make("cnn")
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        mon = gradprobe.watch(model, opt)
        run = torch.compile(model, backend="aot_eager") if compiled else model
        x, y = _data(model, 8 * k)
        _accumulate(run, opt, x, y, k, steps)
        if compiled:
            assert _graph_breaks() == {}
            assert dynamo.utils.counters["stats"]["unique_graphs"] <= 4
        got.append(mon.to_pandas("layers"))
    _same(got[0], got[1], 1e-6, LAYER_COLS)


def test_model_compiled_after_watch_on_a_step_not_recorded_is_recorded_from_the_next() -> None:
    """every=2, eager step 0, compiled from step 1 (not recorded: no hook registered while dynamo
    traced it). Dynamo does not guard on empty hook dicts, so without a reset at the next
    recorded step its bare graph would keep running and steps 2, 4 would have no layer rows."""
    dynamo.reset()
    dynamo.utils.counters.clear()
    model = _make("mlp")
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = gradprobe.watch(model, opt, every=2)
    x, y = _data(model)
    _train(model, opt, 1, x, y)
    _train(torch.compile(model, backend="aot_eager"), opt, 4, x, y)
    assert _graph_breaks() == {}
    layers = mon.to_pandas("layers")
    assert sorted(set(layers["step"])) == [0, 2, 4]
    assert not layers[["act_rms", "backward_norm"]].isna().any().any()
    eager, _, _ = _run("mlp", None, every=2, steps=5)
    _same(layers, eager.to_pandas("layers"), 1e-6, LAYER_COLS)


@pytest.mark.parametrize(
    "options",
    [
        {"activations": False},
        {"backward": False},
        {"activations": False, "backward": False},  # gradients only: depth from the layer order
    ],
)
def test_watched_compiled_model_with_fewer_statistics_has_the_eager_rows(
    options: dict[str, bool],
) -> None:
    got = []
    for compiled in (True, False):
        dynamo.reset()
        dynamo.utils.counters.clear()
        model = _make("cnn")
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        mon = gradprobe.watch(model, opt, **options)
        run = torch.compile(model, backend="aot_eager") if compiled else model
        x, y = _data(model)
        _train(run, opt, 3, x, y)
        assert _graph_breaks() == {}
        got.append((mon.to_pandas(), mon.to_pandas("layers")))
    (cp, cl), (ep, el) = got
    _same(cp, ep, 1e-10, ["grad_norm", "weight_norm"])
    assert len(cl) == len(el)
    if len(el):
        _same(cl, el, 1e-6, LAYER_COLS)
