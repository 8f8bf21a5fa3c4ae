"""The monitor follows its schedule (gradprobe.budget): which tier each step has decides which
hooks are armed and which rows appear, with a scripted schedule and with a Budget on a fake
clock; the default records step 0 fully; the same on a compiled model (no graph break, no
recompilation when tiers switch)."""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch._dynamo as dynamo
import torch.nn.functional as F
from torch import nn

import gradprobe
from gradprobe.budget import Budget, Tier

A, G, N = Tier.ALL, Tier.GRADIENTS, Tier.NONE


class Scripted:
    """A schedule that plays a fixed list of tiers (cycled) and remembers the steps it was told
    had ended."""

    def __init__(self, tiers: list[Tier]) -> None:
        self.tiers, self.ended = tiers, []

    def tier(self, step: int) -> Tier:
        return self.tiers[step % len(self.tiers)]

    def done(self, step: int) -> None:
        self.ended.append(step)


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1)
    )


def train(model: Any, opt: torch.optim.Optimizer, steps: int, before=None) -> list[dict]:  # type: ignore[no-untyped-def]
    """``steps`` SGD steps on fixed batches; returns each step's reference gradient norms."""
    g = torch.Generator().manual_seed(1)
    refs = []
    for step in range(steps):
        if before is not None:
            before(step)
        opt.zero_grad()
        x, y = torch.randn(32, 6, generator=g), torch.randn(32, 1, generator=g)
        F.mse_loss(model(x), y).backward()
        refs.append({n: float(p.grad.double().norm()) for n, p in model.named_parameters()})
        opt.step()
    return refs


def steps_of(frame: pd.DataFrame) -> list[int]:
    return sorted(set(frame["step"].tolist()))


def test_default_watch_records_step_zero_fully_and_says_its_budget() -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradprobe.watch(model, opt)
    assert isinstance(mon.schedule, Budget) and mon.schedule.fraction == 0.05
    train(model, opt, 1)
    params, layers = mon.to_pandas(), mon.to_pandas("layers")
    assert len(params) == 6 and len(layers) == 3
    assert (params["step"] == 0).all() and (params["tier"] == "all").all()
    assert not layers[["act_rms", "backward_norm"]].isna().any().any()
    assert "budget=5%" in repr(mon)
    assert mon.cost["budget"] == 0.05 and mon.cost["share_all"] == 1.0
    mon.detach()


def test_monitor_follows_a_scripted_schedule_tiers_to_rows() -> None:
    """ALL steps: params and layers rows, hooks armed; GRADIENTS: params rows only (exact
    gradients), no module hook; NONE: nothing. The schedule is told of every step's end."""
    tiers = [A, G, N, G, G, A, N]
    sched = Scripted(tiers)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradprobe.watch(model, opt, budget=sched)
    armed = []
    refs = train(model, opt, 14, before=lambda s: armed.append(len(model[0]._forward_hooks) > 0))
    params, layers = mon.to_pandas(), mon.to_pandas("layers")
    mon.detach()
    want = [sched.tier(s) for s in range(14)]
    assert armed == [t == A for t in want]
    assert sched.ended == list(range(14))
    assert steps_of(params) == [s for s, t in enumerate(want) if t >= G]
    assert steps_of(layers) == [s for s, t in enumerate(want) if t == A]
    tier_col = params.groupby("step")["tier"].agg(set).to_dict()
    assert tier_col == {s: {"all" if want[s] == A else "gradients"} for s in tier_col}
    assert (layers["tier"] == "all").all()
    for s in steps_of(params):
        rows = params[params["step"] == s]
        for layer, pn, got in zip(rows["layer"], rows["param"], rows["grad_norm"], strict=True):
            assert got == pytest.approx(refs[s][f"{layer}.{pn}"], rel=1e-10)
    assert not layers[["act_rms", "backward_norm"]].isna().any().any()
    assert len(model[0]._forward_hooks) == 0


def test_gradients_only_monitor_tops_out_at_the_gradients_tier() -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradprobe.watch(model, opt, activations=False, backward=False)
    assert mon.schedule.top == Tier.GRADIENTS
    train(model, opt, 3)
    assert len(mon.to_pandas("layers")) == 0
    assert (mon.to_pandas()["tier"] == "gradients").all()
    assert list(mon.to_pandas()["depth"][:6]) == [0, 0, 1, 1, 2, 2]  # order still learned
    mon.detach()
    sched = Scripted([A, G])  # a schedule asking for more than the monitor records: clamped
    mon = gradprobe.watch(model, opt, budget=sched, activations=False, backward=False)
    train(model, opt, 4)
    assert steps_of(mon.to_pandas()) == [0, 1, 2, 3]
    mon.detach()


def test_budget_on_a_fake_clock_picks_the_steps_and_the_rows_follow() -> None:
    """Step times from a fake clock: recording everything costs 40%, gradients 2% (spent in
    the monitor's reading of them, which it times). The budget then records gradients on
    every step and everything on ~7% of them, and the monitor's rows are exactly the
    budget's tiers."""
    t = [0.0]
    cost = {N: 1.0, G: 1.02, A: 1.4}
    budget = Budget(0.05, clock=lambda: t[0], window=16, decide_every=16)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradprobe.watch(model, opt, budget=budget)
    read = mon._recorder.read

    def slow_read(*args: object, **kwargs: object) -> object:
        t[0] += cost[G] - 1  # the reading of the gradients, in the optimizer's pre-hook
        return read(*args, **kwargs)

    mon._recorder.read = slow_read  # type: ignore[method-assign]
    want: list[Tier] = []  # each step's tier, asked when it starts (later plans differ)

    def tick(step: int) -> None:
        want.append(budget.tier(step))
        t[0] += cost[want[-1]] - (cost[G] - 1 if want[-1] >= G else 0.0)

    steps = 300
    train(model, opt, steps, before=tick)
    params, layers = mon.to_pandas(), mon.to_pandas("layers")
    mon.detach()
    assert steps_of(params) == [s for s, x in enumerate(want) if x >= G]
    assert steps_of(layers) == [s for s, x in enumerate(want) if x == A]
    later = want[100:]
    assert statistics.fmean(cost[x] - 1 for x in later) <= 0.05 * 1.02
    assert 0.04 < later.count(A) / len(later) < 0.12
    assert later.count(N) == 0  # timed by the monitor, the gradients need no reference steps
    c = mon.cost
    assert c["none"] == 0.0
    assert c["gradients"] == pytest.approx(0.02) and c["all"] == pytest.approx(0.4)
    assert c["expected"] <= 0.05 + 1e-9
    assert c["share_all"] == pytest.approx(budget.plan.top)


def _spent_by_step(budget: Budget) -> list[float]:
    """The ``spent`` the monitor gives each step's ``done`` (a list filled as steps end)."""
    spent: list[float] = []
    done = budget.done

    def spy(step: int, seconds: float = 0.0) -> None:
        spent.append(seconds)
        done(step, seconds)

    budget.done = spy  # type: ignore[method-assign]
    return spent


def test_the_monitors_code_after_a_step_ends_counts_in_the_next_steps_time() -> None:
    """What the hooks run after the step's clock reading (the next step's tier, the hooks'
    settings) falls in the next step's time: it is that step's ``spent``, so none of the
    monitor's own code is left out of the cost the budget times (on a 2 ms step 6 us of it
    were). Arming and disarming the module hooks is not: that belongs to the tier recording
    everything, whose cost is measured from step times."""
    t = [0.0]
    budget = Budget(0.05, clock=lambda: t[0], window=16, decide_every=16)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradprobe.watch(model, opt, budget=budget, activations=False, backward=False)
    spent = _spent_by_step(budget)
    arm = mon._capture.arm

    def slow_arm() -> None:  # asked after every step (gradients only: it has nothing to arm)
        t[0] += 0.25
        arm()

    mon._capture.arm = slow_arm  # type: ignore[method-assign]
    want: list[Tier] = []
    train(model, opt, 40, before=lambda step: want.append(budget.tier(step)))
    mon.detach()
    # (asked when the next step records the gradients; none before the first step)
    assert spent == [0.0] + [0.25 if x >= G else 0.0 for x in want[1:]]
    assert sum(x >= G for x in want) >= 30

    t[0] = 0.0
    budget = Budget(0.05, clock=lambda: t[0], window=16, decide_every=16)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradprobe.watch(model, opt, budget=budget)
    spent = _spent_by_step(budget)
    cap, switches = mon._capture, []

    def slowed(name: str) -> Any:
        real = getattr(cap, name)

        def slow() -> None:
            was = cap.armed and cap.on
            real()
            if (cap.armed and cap.on) != was:  # the hooks went on or off
                switches.append(name)
                t[0] += 0.5

        return slow

    for name in ("arm", "disarm"):
        setattr(cap, name, slowed(name))
    train(model, opt, 60)
    mon.detach()
    assert {"arm", "disarm"} <= set(switches)  # the warm-up rotates through the tiers
    assert len(spent) == 60 and spent == [0.0] * 60


def test_every_and_budget_none_are_fixed_schedules() -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradprobe.watch(model, opt, every=3)
    train(model, opt, 7)
    assert steps_of(mon.to_pandas()) == [0, 3, 6] == steps_of(mon.to_pandas("layers"))
    assert "every=3" in repr(mon) and mon.cost == {"share_gradients": 1 / 3, "share_all": 1 / 3}
    mon.detach()
    mon = gradprobe.watch(model, opt, budget=None)
    train(model, opt, 20)
    assert steps_of(mon.to_pandas("layers")) == list(range(20))
    assert "budget=None" in repr(mon)
    mon.detach()


def test_steps_without_an_optimizer_follow_the_schedule() -> None:
    sched = Scripted([A, N, G])
    model = mlp()
    mon = gradprobe.watch(model, budget=sched)
    for _ in range(6):
        model.zero_grad()
        model(torch.randn(8, 6)).pow(2).mean().backward()
        mon.step()
    assert steps_of(mon.to_pandas()) == [0, 2, 3, 5]
    assert steps_of(mon.to_pandas("layers")) == [0, 3]
    assert sched.ended == list(range(6))
    mon.detach()


def test_tier_column_survives_a_log_dir_and_a_flush_between_steps(tmp_path) -> None:
    sched = Scripted([A, G, G])
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradprobe.watch(model, opt, budget=sched, log_dir=tmp_path)
    mon._rows.limit = 2  # rows made in small batches
    train(model, opt, 4)
    mon.flush()
    train(model, opt, 5)
    mon.detach()
    run = gradprobe.load_run(tmp_path).to_pandas("params")
    got = run.groupby("step")["tier"].first().tolist()
    assert got == ["all" if s % 3 == 0 else "gradients" for s in range(9)]


# ------------------------------------------------------------------- compiled
def _compiled_rows(tiers: list[Tier], compiled: bool, steps: int) -> tuple[Any, ...]:
    from test_compile import _data, _make, _train

    dynamo.reset()
    dynamo.utils.counters.clear()
    model = _make("mlp")
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    run = torch.compile(model, backend="aot_eager") if compiled else model
    mon = gradprobe.watch(run, opt, budget=Scripted(tiers))
    x, y = _data(model)
    _train(run, opt, len(tiers), x, y)  # every kind of step once: compiled
    graphs = dict(dynamo.utils.counters["stats"])
    dynamo.utils.counters["stats"].clear()
    _train(run, opt, steps - len(tiers), x, y)
    again = dynamo.utils.counters["stats"]["unique_graphs"]
    breaks = dict(dynamo.utils.counters["graph_break"])
    out = mon.to_pandas(), mon.to_pandas("layers"), graphs, again, breaks
    mon.detach()
    return out


def test_switching_tiers_on_a_compiled_model_breaks_no_graph_and_compiles_once() -> None:
    tiers = [A, G, N, A, A, G]
    cp, cl, _, again, breaks = _compiled_rows(tiers, True, 18)
    assert breaks == {}
    assert again == 0  # tiers switching after the first round compile nothing new
    ep, el, *_ = _compiled_rows(tiers, False, 18)
    assert steps_of(cl) == steps_of(el) == [s for s in range(18) if tiers[s % 6] == A]
    assert steps_of(cp) == steps_of(ep)
    np.testing.assert_allclose(cp["grad_norm"], ep["grad_norm"], rtol=1e-10)
    for col in ("act_rms", "backward_norm"):
        np.testing.assert_allclose(cl[col], el[col], rtol=1e-6)


def test_on_the_cpu_the_budget_times_steps_in_thread_cpu_time() -> None:
    """Wall time on a machine shared with other processes swung a 2.5 ms step's median by 100%;
    the training thread's CPU time by 2%."""
    import time

    model = mlp()
    mon = gradprobe.watch(model, torch.optim.SGD(model.parameters(), lr=0.01))
    want = time.thread_time if time.get_clock_info("thread_time").resolution <= 1e-6 else None
    assert mon.schedule.clock is (want or time.perf_counter)
    assert mon._clock is (time.perf_counter if want else mon.schedule.clock)
    mon.detach()
