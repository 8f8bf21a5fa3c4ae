"""Layer statistics inside ``torch.compile``: no graph break, the eager numbers.

``_CompiledHooks`` registers hooks the way the monitor does (forward hooks on every module that
owns parameters and on activation modules, a TorchFunctionMode for functional activations, the
optimizer's step hooks for gradients) and, inside the compiled region, calls only
:mod:`gradprobe.torch._compiled`. The hooks stay registered on every step and return at once
when the step is not recorded, so ``every=N`` costs no recompilation. Each test compares with a
slow reference: the same model run eagerly, its tensors caught with plain hooks and reduced in
numpy.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import numpy as np
import pytest
import torch
import torch._dynamo as dynamo
from torch import nn
from torch.overrides import TorchFunctionMode

from gradprobe.torch import _compiled as C
from gradprobe.torch._activations import FUNCTIONS, MODULES, Activation


class _Functional(TorchFunctionMode):
    def __init__(self, hooks: _CompiledHooks) -> None:
        super().__init__()
        self.hooks = hooks

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        act = FUNCTIONS.get(func)
        if act is not None and not self.hooks.in_act:
            self.hooks.on_activation(act, out)
        return out


class _CompiledHooks:
    """The monitor's hooks, reduced to what runs inside a compiled region.

    Everything a hook reads is the same at each entry of the compiled model (``recording`` per
    kind of step, ``pending``/``last`` None, ``found`` empty), so dynamo compiles once per kind.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, every: int = 1) -> None:
        inner = getattr(model, "_orig_mod", model)  # compiled before: hook the model itself
        self.every, self.step, self.recording = every, 0, True
        self.last: str | None = None
        self.pending: torch.Tensor | None = None
        self.in_act = 0
        self.found: list[tuple[str, Activation | None, torch.Tensor]] = []
        self.probes: dict[str, torch.Tensor] = {}
        self.params = [(n, p) for n, p in inner.named_parameters()]
        self.layer_rows: list[dict[str, tuple[np.ndarray, np.ndarray | None, float | None]]] = []
        self.grad_rows: list[dict[str, float]] = []
        self.acts: dict[str, str] = {}
        self.mode = _Functional(self)
        self.mode_on = False
        self.conv = {
            path for path, mod in inner.named_modules() if isinstance(mod, nn.modules.conv._ConvNd)
        }
        h = []
        for path, mod in inner.named_modules():
            own = list(mod.parameters(recurse=False))
            if own:
                self.probes[path] = C.new_probe(own[0].device)
                h.append(mod.register_forward_hook(partial(self.on_layer, path)))
            elif type(mod) in MODULES:
                h.append(mod.register_forward_pre_hook(self.enter_act))
                h.append(mod.register_forward_hook(partial(self.on_act_module, MODULES[type(mod)])))
        h.append(inner.register_forward_pre_hook(self.start_forward))
        h.append(inner.register_forward_hook(self.end_forward, always_call=True))
        h.append(optimizer.register_step_pre_hook(self.before_update))
        h.append(optimizer.register_step_post_hook(self.after_update))
        self.handles = h

    # forward: traced by dynamo
    def start_forward(self, module: nn.Module, inputs: Any) -> None:
        if self.recording and torch.is_grad_enabled():
            self.mode.__enter__()
            self.mode_on = True

    def on_layer(self, name: str, module: nn.Module, inputs: Any, out: Any) -> Any:
        if not self.mode_on:
            return None
        self.resolve()
        self.last = name
        if out.requires_grad:
            out = C.signal_probe(out, self.probes[name])
        self.pending = out
        return out

    def enter_act(self, module: nn.Module, inputs: Any) -> None:
        self.in_act += 1

    def on_act_module(self, act: Activation, module: nn.Module, inputs: Any, out: Any) -> None:
        self.in_act -= 1
        self.on_activation(act, out)

    def on_activation(self, act: Activation, out: torch.Tensor) -> None:
        if not self.mode_on or self.pending is None or self.last is None:
            return
        self.pending = None
        self.measure(self.last, act, out)

    def resolve(self) -> None:
        if self.pending is not None and self.last is not None:
            self.measure(self.last, None, self.pending)
        self.pending = None

    def measure(self, name: str, act: Activation | None, out: torch.Tensor) -> None:
        low, high, unit = -math.inf, math.inf, None
        if act is not None and act.family == "saturating":
            low, high = act.low, act.high
        if act is not None and act.family == "rectifier" and out.ndim >= 2:
            unit = 1 if out.ndim > 2 and name in self.conv else -1
        self.found.append((name, act, C.layer_stats(out, low, high, unit)))

    def end_forward(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if self.mode_on:
            self.resolve()
            self.last = None
            self.mode.__exit__(None, None, None)
            self.mode_on = False

    # optimizer hooks: eager, outside the compiled region
    def before_update(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if not self.recording:
            return
        self.grad_rows.append(
            {n: float(torch.linalg.vector_norm(p.grad.double())) for n, p in self.params}
        )
        by_layer: dict[str, list[torch.Tensor]] = {}
        for name, act, vec in self.found:
            by_layer.setdefault(name, []).append(vec)
            self.acts.setdefault(name, act.name if act is not None else "")
        self.found.clear()
        row = {}
        for name, probe in self.probes.items():
            bsq = C.take_probe(probe)
            m, alive = C.fold(by_layer[name]) if name in by_layer else (None, None)
            row[name] = (m, alive, bsq)
        self.layer_rows.append(row)

    def after_update(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.step += 1
        self.recording = self.step % self.every == 0

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


# ---------------------------------------------------------------- models and the eager reference
class _MLP(nn.Sequential):
    def __init__(self, width: int = 16) -> None:
        super().__init__(
            nn.Linear(8, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.Tanh(),
            nn.Linear(width, width),
            nn.ReLU(inplace=True),
            nn.Linear(width, 1),
        )


MLP_MEASURED = {"0": ("out", "1", "relu"), "2": ("out", "3", "tanh"),
                "4": ("out", "5", "relu"), "6": ("out", "6", "")}  # fmt: skip


class _CNN(nn.Module):
    """Convolution, BatchNorm, an in-place ReLU module, a functional tanh, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.conv1(x)))
        x = torch.tanh(self.conv2(x))
        return self.head(x.flatten(1))


CNN_MEASURED = {"conv1": ("out", "conv1", ""), "bn": ("out", "act", "relu"),
                "conv2": ("in", "head", "tanh"), "head": ("out", "head", "")}  # fmt: skip


def _data(model: nn.Module, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    if isinstance(model, _CNN):
        return torch.randn(n, 1, 6, 6, generator=g), torch.randn(n, 3, generator=g)
    return torch.randn(n, 8, generator=g), torch.randn(n, 1, generator=g)


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int, x: Any, y: Any) -> None:
    for _ in range(steps):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()


def _reference(
    make: Any, measured: dict[str, tuple[str, str, str]], steps: int
) -> tuple[list[dict[str, Any]], list[dict[str, float]]]:
    """Eager, slow and obvious: keep the measured tensors and dL/dh, reduce them in numpy."""
    model = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mods = dict(model.named_modules())
    x, y = _data(model)
    rows, grads = [], []
    kept: dict[str, torch.Tensor] = {}
    sig: dict[str, float] = {}
    for _ in range(steps):
        kept.clear()
        sig.clear()
        handles = []
        for layer, (where, path, _act) in measured.items():

            def keep(mod: Any, inp: Any, out: Any, layer: str = layer, where: str = where) -> None:
                kept[layer] = (inp[0] if where == "in" else out).detach().clone()

            if where == "in":
                handles.append(
                    mods[path].register_forward_pre_hook(lambda m, i, k=keep: k(m, i, None))
                )
            else:
                handles.append(mods[path].register_forward_hook(keep))

            def signal(mod: Any, inp: Any, out: Any, layer: str = layer) -> None:
                def on_grad(g: torch.Tensor) -> None:
                    sig[layer] = sig.get(layer, 0.0) + float(g.double().square().sum())

                out.register_hook(on_grad)

            handles.append(mods[layer].register_forward_hook(signal))
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        grads.append({n: float(p.grad.double().norm()) for n, p in model.named_parameters()})
        opt.step()
        for hnd in handles:
            hnd.remove()
        row = {}
        for layer, (_w, _p, act) in measured.items():
            a = kept[layer].double().numpy()
            m = np.array([a.sum(), np.square(a).sum(), a.size, 0.0])
            alive = None
            if act == "tanh":
                m[3] = np.count_nonzero(np.abs(kept[layer].numpy()) > math.sqrt(0.99))
            if act == "relu":
                ud = 1 if a.ndim > 2 and isinstance(mods[layer], nn.Conv2d) else a.ndim - 1
                alive = a.max(axis=tuple(d for d in range(a.ndim) if d != ud)) > 0
            row[layer] = (m, alive, sig.get(layer))
        rows.append(row)
    return rows, grads


def _make(kind: str) -> nn.Module:
    torch.manual_seed(0)
    return _CNN() if kind == "cnn" else _MLP()


MEASURED = {"mlp": MLP_MEASURED, "cnn": CNN_MEASURED}


def _compiled_run(
    kind: str, order: str, backend: str, steps: int, every: int = 1
) -> tuple[_CompiledHooks, nn.Module, torch.optim.Optimizer]:
    dynamo.reset()
    dynamo.utils.counters.clear()
    model = _make(kind)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    if order == "before":  # compiled, then watched
        compiled = torch.compile(model, backend=backend)
        hooks = _CompiledHooks(compiled, opt, every)
    else:
        hooks = _CompiledHooks(model, opt, every)
        compiled = torch.compile(model, backend=backend)
    x, y = _data(model)
    _train(compiled, opt, steps, x, y)
    return hooks, compiled, opt


def _graph_breaks() -> dict[str, int]:
    return dict(dynamo.utils.counters["graph_break"])


def _check_numbers(hooks: _CompiledHooks, kind: str, steps: int, rtol: float) -> None:
    ref_rows, ref_grads = _reference(lambda: _make(kind), MEASURED[kind], steps)
    assert len(hooks.layer_rows) == steps
    for got, want in zip(hooks.layer_rows, ref_rows, strict=True):
        assert set(got) == set(want)
        for layer, (m, alive, bsq) in want.items():
            g_m, g_alive, g_bsq = got[layer]
            assert g_m is not None, layer
            np.testing.assert_allclose(g_m, m, rtol=rtol, atol=1e-6, err_msg=layer)
            assert (g_alive is None) == (alive is None), layer
            if alive is not None:
                np.testing.assert_array_equal(g_alive, alive, err_msg=layer)
            assert g_bsq is not None and bsq is not None
            assert g_bsq == pytest.approx(bsq, rel=rtol), layer
    # the gradients are read in the optimizer's hooks, outside the compiled region
    for got_g, want_g in zip(hooks.grad_rows, ref_grads, strict=True):
        assert got_g.keys() == want_g.keys()
        for name in want_g:
            # abs: the bias before BatchNorm has a gradient of rounding noise only
            assert got_g[name] == pytest.approx(want_g[name], rel=rtol, abs=1e-6), name


# --------------------------------------------------------------------------------------- tests
def test_layer_stats_matches_numpy_over_thirty_decades() -> None:
    for scale in (1e-30, 1.0, 1e30):
        x = (torch.randn(5, 7, dtype=torch.float64) * scale).float()
        got = C.layer_stats(x, -0.5 * scale, 0.5 * scale, unit_dim=-1).numpy()
        a = x.double().numpy()
        assert got[C.SUMSQ] == pytest.approx(np.square(a).sum(), rel=1e-12)
        assert got[C.SUMSQ] > 0 and math.isfinite(got[C.SUMSQ])
        assert got[C.SUM] == pytest.approx(a.sum(), rel=1e-9, abs=1e-9 * scale)
        assert got[C.COUNT] == 35
        xf = x.numpy()
        assert got[C.SATURATED] == np.count_nonzero((xf < -0.5 * scale) | (xf > 0.5 * scale))
        np.testing.assert_array_equal(got[C.HEAD :] > 0, a.max(axis=0) > 0)


def test_signal_probe_sums_squared_backward_signal_over_backwards() -> None:
    probe = C.new_probe()
    h = torch.randn(4, 3, requires_grad=True)
    out = C.signal_probe(h, probe)
    torch.testing.assert_close(out, h, rtol=0, atol=0)
    (out * 3).sum().backward(retain_graph=True)
    (out * 2).sum().backward()
    assert C.take_probe(probe) == pytest.approx(9 * 12 + 4 * 12)
    assert C.take_probe(probe) is None  # read once


def test_signal_probe_allows_an_inplace_activation_after_the_layer() -> None:
    probe = C.new_probe()
    h = torch.randn(4, 3, requires_grad=True)
    out = nn.ReLU(inplace=True)(C.signal_probe(h * 1, probe))
    out.sum().backward()
    assert C.take_probe(probe) == pytest.approx(float((h > 0).sum()))


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("order", ["after", "before"])
def test_compiled_model_has_no_graph_break_and_eager_numbers(kind: str, order: str) -> None:
    steps = 3
    hooks, _, _ = _compiled_run(kind, order, "aot_eager", steps)
    assert _graph_breaks() == {}
    _check_numbers(hooks, kind, steps, rtol=1e-5)
    if kind == "cnn":
        assert hooks.acts == {"conv1": "", "bn": "relu", "conv2": "tanh", "head": ""}


def test_every_n_on_a_compiled_model_recompiles_nothing_after_the_first_steps() -> None:
    hooks, compiled, opt = _compiled_run("mlp", "after", "aot_eager", steps=4, every=2)
    dynamo.utils.counters.clear()
    x, y = _data(_make("mlp"))
    _train(compiled, opt, 6, x, y)
    assert dynamo.utils.counters["stats"]["unique_graphs"] == 0
    assert _graph_breaks() == {}
    assert len(hooks.layer_rows) == 5  # steps 0, 2, 4, 6, 8


def test_no_grad_forward_of_a_watched_compiled_model_records_nothing() -> None:
    hooks, compiled, _ = _compiled_run("mlp", "after", "aot_eager", steps=1)
    with torch.no_grad():
        compiled(_data(_make("mlp"))[0])
    assert hooks.found == [] and hooks.pending is None
    assert _graph_breaks() == {}


def test_removed_hooks_leave_the_compiled_model_bare() -> None:
    hooks, compiled, opt = _compiled_run("mlp", "after", "aot_eager", steps=1)
    hooks.remove()
    x, y = _data(_make("mlp"))
    _train(compiled, opt, 2, x, y)
    assert len(hooks.layer_rows) == 1 and hooks.found == []
    bare = _make("mlp")
    bare_opt = torch.optim.SGD(bare.parameters(), lr=0.05)
    _train(bare, bare_opt, 3, x, y)
    for p, q in zip(compiled.parameters(), bare.parameters(), strict=True):
        torch.testing.assert_close(p, q)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_inductor_compiled_model_has_no_graph_break_and_eager_numbers(kind: str) -> None:
    steps = 2
    hooks, _, _ = _compiled_run(kind, "after", "inductor", steps)
    assert _graph_breaks() == {}
    _check_numbers(hooks, kind, steps, rtol=1e-4)


def test_dynamo_ignores_hooks_added_after_a_compiled_run_until_reset() -> None:
    """Why the monitor must call ``torch._dynamo.reset()`` when it watches a model compiled
    code already ran for: dynamo does not guard on empty hook dicts
    (``torch._dynamo.config.skip_nnmodule_hook_guards``), so the hook-free graph keeps running."""
    dynamo.reset()
    model = _make("mlp")
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    compiled = torch.compile(model, backend="aot_eager")
    x, y = _data(model)
    _train(compiled, opt, 1, x, y)
    hooks = _CompiledHooks(compiled, opt)
    _train(compiled, opt, 1, x, y)
    assert all(m is None and bsq is None for m, _, bsq in hooks.layer_rows[-1].values())
    dynamo.reset()
    _train(compiled, opt, 1, x, y)
    assert all(m is not None and bsq is not None for m, _, bsq in hooks.layer_rows[-1].values())
