"""The C step hooks (gradprobe._fused.Ticker): steps that record nothing, and whose next step
records nothing, end without Python. The records, the step count and what the budget hears
must be those of the Python hooks."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradprobe
from gradprobe.budget import Budget
from gradprobe.torch import _native
from gradprobe.torch.monitor import Monitor

pytestmark = pytest.mark.skipif(not _native.available(), reason="gradprobe._fused is not built")


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 1))


def loop(model, opt, steps: int, scaler=None, poison=()):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(1)
    for step in range(steps):
        opt.zero_grad()
        x, y = torch.randn(32, 6, generator=g), torch.randn(32, 1, generator=g)
        if step in poison:
            x = x * float("inf")
        loss = F.mse_loss(model(x), y)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()


def python_hooks_count(monkeypatch) -> dict[str, int]:  # type: ignore[no-untyped-def]
    calls = {"after_update": 0}
    after = Monitor.after_update

    def counted(self, optimizer):  # type: ignore[no-untyped-def]
        calls["after_update"] += 1
        return after(self, optimizer)

    monkeypatch.setattr(Monitor, "after_update", counted)
    return calls


def run(every: int, steps: int, c_hooks: bool, monkeypatch, **kw):  # type: ignore[no-untyped-def]
    import gradprobe.torch.monitor as M

    clock = M._ticker_clock
    monkeypatch.setattr(M, "_ticker_clock", clock if c_hooks else lambda schedule: None)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = gradprobe.watch(model, opt, every=every, **kw)
    loop(model, opt, steps)
    mon.detach()
    return mon, [p.detach().clone() for p in model.parameters()]


def test_quiet_steps_run_no_python_and_the_records_are_the_same(monkeypatch):
    calls = python_hooks_count(monkeypatch)
    mon, w = run(10, 95, True, monkeypatch)
    fast_calls = calls["after_update"]
    assert mon._steps.ticker is not None
    calls["after_update"] = 0
    ref, w_ref = run(10, 95, False, monkeypatch)
    assert ref._steps.ticker is None
    assert calls["after_update"] == 95
    # the 10 recorded steps (0, 10, ..., 90) and the 9 steps before one (9, 19, ..., 89)
    assert fast_calls == 10 + 9
    assert mon.steps_seen == ref.steps_seen == 95
    a, b = mon.to_pandas(), ref.to_pandas()
    assert sorted(a["step"].unique()) == list(range(0, 95, 10))
    assert a.equals(b)
    assert mon.to_pandas("layers").equals(ref.to_pandas("layers"))
    for x, y in zip(w, w_ref, strict=True):
        assert torch.equal(x, y)


def test_the_budget_hears_of_every_step_in_order_with_its_clock(monkeypatch):
    monkeypatch.setattr(_native, "ENABLED", True)
    seen: list[list[int]] = []
    decide = Budget._decide

    def logged(self, step):  # type: ignore[no-untyped-def]
        seen.append([s for s, _, _ in self._log])
        clocks = [c for _, c, _ in self._log]
        assert clocks == sorted(clocks)  # one clock, read at each step's end
        decide(self, step)

    monkeypatch.setattr(Budget, "_decide", logged)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = gradprobe.watch(model, opt, budget=0.01)  # tight: most steps record nothing
    loop(model, opt, 1500)
    assert mon._steps.ticker is not None and mon.schedule.clock is time.thread_time
    flat = [s for block in seen for s in block]
    assert flat == list(range(len(flat)))  # every step once, in order, none left out
    assert len(flat) >= 1400
    assert mon.steps_seen == 1500
    assert 0 < mon.cost["share_gradients"] < 1
    recorded = mon.to_pandas()["step"].unique()
    assert 0 < len(recorded) < 1500


def test_a_scaler_skipping_a_quiet_step_counts_it(monkeypatch):
    monkeypatch.setattr(_native, "ENABLED", True)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    mon = gradprobe.watch(model, opt, every=5, scaler=scaler)
    loop(model, opt, 23, scaler=scaler, poison={7, 10})
    mon.detach()
    assert mon.steps_seen == 23
    params = mon.to_pandas()
    assert sorted(params["step"].unique()) == [0, 5, 10, 15, 20]
    assert params[params["step"] == 10]["skipped"].all()
    assert not params[params["step"] == 15]["skipped"].any()


def test_a_closure_on_quiet_steps_runs_once_per_call_and_recorded_steps_read_it(monkeypatch):
    monkeypatch.setattr(_native, "ENABLED", True)
    model = mlp()
    opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=3)
    mon = gradprobe.watch(model, opt, every=4)
    x, y = torch.randn(16, 6), torch.randn(16, 1)
    firsts = {}
    for step in range(9):

        def closure(step=step):  # type: ignore[no-untyped-def]
            opt.zero_grad()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            norms = {n: float(p.grad.double().norm()) for n, p in model.named_parameters()}
            firsts.setdefault(step, norms)
            return loss

        opt.step(closure)
    mon.detach()
    frame = mon.to_pandas()
    assert sorted(frame["step"].unique()) == [0, 4, 8]
    for s in (0, 4, 8):
        got = frame[frame["step"] == s].set_index(["layer", "param"])["grad_norm"]
        for (layer, param), v in got.items():
            assert v == pytest.approx(firsts[s][f"{layer}.{param}"], rel=1e-6)


def test_a_watched_model_still_deep_copies_with_its_counts(monkeypatch):
    import copy

    monkeypatch.setattr(_native, "ENABLED", True)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = gradprobe.watch(model, opt, every=4)
    loop(model, opt, 6)
    ticker = mon._steps.ticker
    twin = copy.deepcopy(ticker)
    assert (twin.step, twin.completed, twin.quiet_until) == (6, 6, ticker.quiet_until)
    assert twin.take() == [] and twin.clock == ticker.clock
    copy.deepcopy(model)  # reaches the monitor through the model's hooks
    mon.detach()


def test_no_c_hooks_where_python_reads_another_clock_than_theirs(monkeypatch):
    """The C hooks read CLOCK_THREAD_CPUTIME_ID / CLOCK_MONOTONIC: where Python's thread_time
    or perf_counter is another clock (a platform of its own), their readings would not line up
    with the budget's, so the Python hooks are kept."""
    import types

    from gradprobe.budget import Every
    from gradprobe.torch.monitor import _ticker_clock

    assert _ticker_clock(Budget(clock=time.thread_time)) == 0
    assert _ticker_clock(Budget(clock=time.perf_counter)) == 1
    assert _ticker_clock(Budget(clock=lambda: 0.0)) is None  # a fake clock: every step in Python
    assert _ticker_clock(Every(3)) == 2  # no clock needed
    info = time.get_clock_info
    monkeypatch.setattr(
        time, "get_clock_info", lambda name: types.SimpleNamespace(implementation="mach")
    )
    assert _ticker_clock(Budget(clock=time.thread_time)) is None
    monkeypatch.setattr(time, "get_clock_info", info)
