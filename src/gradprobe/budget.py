"""Which statistics each step records: a fixed period, or an overhead budget measured online.

Framework-free: the PyTorch and Keras monitors ask a :class:`Schedule` before each step what it
records (a :class:`Tier`), and tell it when each step ends. Two schedules:

- :class:`Every`: ``every=N`` records everything on steps 0, N, 2N, ... and nothing in between.
- :class:`Budget` (the default, 5%): keeps the measured cost of watching within a fraction of
  the step time. It times the steps themselves (from the end of one step to the end of the
  next, so the user's whole loop counts; ``clock`` says with what: the PyTorch monitor passes
  the training thread's CPU time on the CPU), and a monitor may also say how long its own code
  ran in the step (``spent``, given to :meth:`Budget.done`). A tier whose whole cost is the
  monitor's own code (``timed``: for the PyTorch monitor, nothing and the gradients, read in
  the optimizer's hooks) costs ``spent / (step time - spent)``: per step, with little noise,
  and without reference steps. A tier above it (module hooks on every layer: their dispatch
  runs in torch, untimed) is compared with an estimate of the bare step taken just before (the
  median of the latest 9 steps of the tiers below, each less its own cost), so that a machine
  whose speed drifts does not bias a tier sampled rarely::

      cost(tier) = mean(step time / recent bare-step estimate) - 1

  Measured that way (as differences of step times) a 4% cost of the gradients was read as
  anything from 0 to 6%: the reference, a median of 9 steps whose times scatter by 5%, moved
  as much as the cost. All costs are fractions of a bare step; the cost of a step recording
  nothing (the fixed cost of being attached: clocks, hooks that return at once) is paid on
  every step and comes off the budget first.

  Gradient statistics (cheap: one pass over the gradients) are recorded on every step when
  their cost fits in the budget; activation and backward-signal statistics on a share of the
  steps chosen so that the average cost stays inside it::

      f_all * cost(ALL) + (f_grad - f_all) * cost(GRADIENTS) + (1 - f_grad) * cost(NONE)
          <= budget

  A recorded step leaves some of its cost to the steps after it (freeing its tensors, cache
  and allocator effects, collections), which no clock of the monitor's shows: on a 0.4 ms
  step the gradients' reading left a third of its cost outside it. When the monitor times its
  own code, the top tier's share is measured on the timed step after it. And the last
  ``quiet_len`` (12) of every ``quiet_every`` (512) steps record only what the plan records
  on every step (nothing; or the gradients, when they go on every step and the monitor times
  them; no stretches when those are all it records): the realised cost of the steps
  before them, measured against these, corrects the plans (:attr:`Budget.factor` = realised
  / expected cost above the stretches' tier, 1.25 until measured, pooled over the stretches
  with older ones weighing less: one stretch of 9 steps scatters by a third of the cost on a
  2 ms step). The budget's own bookkeeping (timed with ``perf_counter``; most of it once
  every 64 steps) is paid on every step, and counts as a fixed cost.

  At least a quarter of the budget goes to the full statistics, so they are sampled on any
  model. Step 0 records everything (the view before training has changed anything). The
  first steps rotate through the tiers to measure them; the periods are then revised every
  ``decide_every`` steps (the costs every fourth time) from the latest step times of each
  tier. When the gradients are not timed by the monitor, at
  least one step in 32 (``probe``) records nothing, to keep their reference fresh: with fewer
  (one in 512 was tried) the reference went stale and a 10% cost of the gradients was
  measured as 0%.

Decisions happen at step numbers fixed in advance and go through ``agree`` (under
``torch.distributed``: the largest period over ranks), so every rank records the same steps.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from gradprobe.errors import UsageError


class Tier(IntEnum):
    """What a step records; each tier includes the ones below it."""

    NONE = 0  #: nothing
    GRADIENTS = 1  #: parameter gradients and updates
    ALL = 2  #: also activations and the backward signal ``dL/dh`` of every layer


class Schedule(Protocol):
    """Tells a monitor what each step records."""

    def tier(self, step: int) -> Tier:
        """What ``step`` records (asked before it starts; the same answer every time)."""

    def done(self, step: int) -> None:
        """``step`` has just ended (a :class:`Budget` also takes ``spent``: the seconds the
        monitor's own code ran in the step)."""


@dataclass(frozen=True)
class Every:
    """Everything (up to ``top``) on steps 0, n, 2n, ...; nothing on the others."""

    n: int = 1
    top: Tier = Tier.ALL

    def tier(self, step: int) -> Tier:
        return self.top if step % self.n == 0 else Tier.NONE

    def done(self, step: int) -> None:
        pass

    def quiet_until(self, step: int) -> int:
        """The first step from ``step`` on that records (see :meth:`Budget.quiet_until`)."""
        return step + (-step % self.n)


@dataclass(frozen=True)
class Plan:
    """Shares of the steps a budget records: ``grad`` of them record gradients, and ``top`` of
    them (a subset of those) record the top tier. Steps go in runs of ``RUN`` (4) spread
    evenly (a Bresenham pattern over the runs), so any window of steps holds its share, and
    the tier of a step is a pure function of the step and the plan (the same on every rank).

    Runs, because a recorded step among unrecorded ones costs more than one among recorded
    ones (colder caches and allocator; measured on a 0.4 ms step: recording everything on one
    step in 4 cost 24.9% against 22.8% in runs of 4 in 16, and 20.2% if each step cost what
    it costs in a row; the gradients 5.9% against 5.4% and 4.8%)."""

    top: float
    grad: float

    RUN = 4

    def tier(self, off: int, top: Tier) -> Tier:
        run = off // self.RUN
        if math.floor((run + 1) * self.grad) == math.floor(run * self.grad):
            return Tier.NONE
        k = math.floor((run + 1) * self.grad)  # gradient runs so far, this one included
        r = self.top / self.grad
        return top if math.floor(k * r) > math.floor((k - 1) * r) else Tier.GRADIENTS


Agree = Callable[[tuple[float, float]], tuple[float, float]]


class Budget:
    """Keeps the measured cost of watching within ``fraction`` of the step time (see module).

    Example, with a fake clock where recording everything costs 40% and gradients 4%::

        >>> t = [0.0]
        >>> b = Budget(0.05, clock=lambda: t[0])
        >>> cost = {Tier.NONE: 1.0, Tier.GRADIENTS: 1.04, Tier.ALL: 1.4}
        >>> tiers = []
        >>> for step in range(3000):
        ...     tier = b.tier(step)
        ...     tiers.append(tier)
        ...     t[0] += cost[tier]
        ...     b.done(step)
        >>> later = tiers[1000:]
        >>> round(sum(cost[x] for x in later) / len(later) - 1, 3)
        0.049
        >>> round(b.plan.top, 4), round(b.plan.grad, 4)
        (0.0309, 0.9576)
    """

    def __init__(
        self,
        fraction: float = 0.05,
        *,
        top: Tier = Tier.ALL,
        agree: Agree | None = None,
        window: int = 64,
        decide_every: int = 64,
        probe: float = 1 / 32,
        quiet_every: int = 512,
        quiet_len: int = 12,
        max_period: int = 1000,
        clock: Callable[[], float] = time.perf_counter,
        timed: Tier = Tier.NONE,
    ) -> None:
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise UsageError(
                f"budget must be a fraction of the step time such as 0.05 (5%), "
                f"got {fraction!r}; or pass every=N for a fixed schedule"
            )
        if not 0 < fraction < 10:
            raise UsageError(
                f"budget must be a fraction of the step time above 0 such as 0.05 (5%), "
                f"got {fraction!r}; for everything on every step pass every=1"
            )
        self.fraction, self.top = float(fraction), Tier(top)
        # the highest tier whose whole cost is the monitor's own code, timed by it (``spent``)
        self.timed = min(Tier(timed), self.top)
        self.agree = agree  # how the ranks agree on a plan (None: one process)
        self._decide_every, self._probe = decide_every, probe
        self._min_share = 1 / max_period
        self.clock = clock  # what steps are timed with (a monitor times its own code with it)
        # each tier's latest step times; each step's time as a ratio to a bare step's
        # (1 + its cost); and the latest estimates of a bare step, with the tier they came from
        self._times: dict[Tier, deque[float]] = {t: deque(maxlen=_LOCAL) for t in Tier}
        self._ratios: dict[Tier, deque[float]] = {t: deque(maxlen=window) for t in Tier}
        # a timed tier: its latest steps' times less the monitor's, and the monitor's time
        # (its cost: the mean of the monitor's times, since work done once in many steps,
        # such as writing out a block of rows, is a cost too; over the median of the others,
        # since a pause in the loop, an evaluation, is none)
        self._timed: dict[Tier, deque[tuple[float, float]]] = {
            t: deque(maxlen=_TIMED_WINDOW) for t in Tier
        }
        self._bases: deque[tuple[Tier, float]] = deque(maxlen=4 * _LOCAL)
        # what a step of the top tier leaves to the timed step after it (freeing its tensors,
        # collections): that step's time less the monitor's, over a bare step's, less 1
        self._spill: deque[float] = deque(maxlen=window)
        self._last = Tier.NONE  # the tier of the step recorded last
        self._tiers = [t for t in Tier if t <= self.top]
        # warm-up: steps 1..2 settle (allocations, compilation), then the tiers rotate
        self._settle = 3
        self._warmup_end = self._settle + len(self._tiers) * 4
        self.plan = Plan(top=1.0, grad=1.0)
        self._prev: tuple[int, float] | None = None
        self._costs: dict[Tier, float] = {}
        # quiet stretches: the realised cost of a plan against steps that record only what
        # the plan records on every step
        self._quiet_every, self._quiet_len = quiet_every, quiet_len
        # the latest steps under a plan: each one's time and what the plan expected of it
        self._recent: deque[tuple[float, float]] = deque(maxlen=4 * window)
        self._quiet: list[float] = []  # this stretch's step times
        # the stretches' realised and expected costs, pooled (older ones weigh less)
        self._pooled = (0.0, 0.0)
        # whether there are quiet stretches, and what they record (see _decide)
        self._quiet_on, self._quiet_tier = True, Tier.NONE
        self.factor = _FIRST_FACTOR  # realised / expected cost, measured (see _realised)
        self._asked = (-1, self.top)  # the last step asked about, and its tier
        self._expected = math.nan  # the current plan's expected cost (set when it changes)
        # the tiers of the steps up to the next decision, worked out at a decision (asked
        # every step: a list lookup), and the next decision's step
        self._table: list[Tier] = []
        self._table_start = 0
        self._next = self._warmup_end
        # steps ended since the last decision (step, clock when it ended, monitor's time),
        # measured there
        self._log: list[tuple[int, float, float]] = []
        # seconds of this budget's own bookkeeping since the last decision: paid on every step
        self._own, self._own_cost = 0.0, 0.0
        self._decisions = 0
        self._own_clock = time.perf_counter if clock in _REAL_CLOCKS else clock

    # ----------------------------------------------------------------- schedule
    def tier(self, step: int) -> Tier:
        i = step - self._table_start
        if 0 <= i < len(self._table):
            return self._table[i]
        asked, tier = self._asked
        if step == asked:  # asked before the step and again when it ends: once is enough
            return tier
        tier = self._tier(step)
        self._asked = (step, tier)
        return tier

    def _tier(self, step: int) -> Tier:
        if step == 0:
            return self.top
        if step < self._warmup_end:
            return self._tiers[step % len(self._tiers)] if step >= self._settle else self.top
        if self._in_quiet(step):
            return self._quiet_tier
        return self.plan.tier(step - self._warmup_end, self.top)

    def _tiers_from(self, step: int, n: int) -> list[Tier]:
        """``_tier`` of ``n`` steps from ``step`` (the plan's asked once per run)."""
        w, plan, top = self._warmup_end, self.plan, self.top
        runs: dict[int, Tier] = {}
        out = []
        for s in range(step, step + n):
            if s < w or self._in_quiet(s):
                out.append(self._tier(s))
                continue
            run = (s - w) // Plan.RUN
            tier = runs.get(run)
            if tier is None:
                tier = runs[run] = plan.tier(s - w, top)
            out.append(tier)
        return out

    def _in_quiet(self, step: int) -> bool:
        """The last ``quiet_len`` steps of every ``quiet_every`` after the warm-up (see
        :meth:`_decide` for when there are none)."""
        off = step - self._warmup_end
        return (
            off >= 0
            and self._quiet_on
            and off % self._quiet_every >= self._quiet_every - self._quiet_len
        )

    def done(self, step: int, spent: float = 0.0) -> None:
        t0 = self._own_clock()
        # measured at the next decision: until then a step costs a clock reading and an append
        self._log.append((step, self.clock(), spent))
        if step + 1 >= self._next:
            self._decide(step + 1)
        self._own += self._own_clock() - t0

    def ended(self, steps: Iterable[tuple[int, float]]) -> None:
        """Steps that ended at the clock readings given (taken by the monitor's C hooks, see
        :meth:`quiet_until`), with none of the monitor's own code in them: :meth:`done` for
        each, in order."""
        for step, now in steps:
            self._log.append((step, now, 0.0))
            if step + 1 >= self._next:
                self._decide(step + 1)

    def quiet_until(self, step: int) -> int:
        """The first step from ``step`` on that records something, or at which the budget
        decides (whose previous step must end through :meth:`done`): the steps before it
        record nothing, and may end through :meth:`ended`. ``step`` itself when unknown."""
        start, table = self._table_start, self._table  # the steps up to the next decision
        if not start <= step < start + len(table):
            return step
        for s in range(step, start + len(table)):
            if table[s - start] != Tier.NONE:
                return s
        return start + len(table)

    def _observe(self, step: int, tier: Tier, seconds: float, spent: float) -> None:
        """One step's time (``spent`` of it in the monitor's own code), at a decision."""
        self._record(tier, seconds, spent)
        if self._in_quiet(step):
            self._quiet.append(seconds)
            if not self._in_quiet(step + 1):
                self._realised()
        elif step >= self._warmup_end:
            self._recent.append((seconds, self._expected))

    # ------------------------------------------------------------- measurement
    @property
    def costs(self) -> dict[str, float]:
        """The measured cost of a step of each tier, as a fraction of a bare step's time
        (``{"none": 0.004, "gradients": 0.04, "all": 0.4}``; ``none``: the fixed cost of being
        attached; empty until measured)."""
        return {t.name.lower(): c + self._own_cost for t, c in self._costs.items()}

    @property
    def expected(self) -> float:
        """The cost of watching the current plan should have, from the measured costs."""
        if self.top not in self._costs:
            return math.nan
        p, c_top = self.plan, self._costs[self.top]
        c_none = self._costs.get(Tier.NONE, 0.0)
        c_grad = self._costs.get(Tier.GRADIENTS, c_top)
        spent = p.top * c_top + (p.grad - p.top) * c_grad + (1 - p.grad) * c_none
        return spent + self._own_cost  # and the bookkeeping, on every step

    def _decide(self, step: int) -> None:
        log, self._log = self._log, []
        prev = self._prev
        for s, now, spent in log:  # (their tiers: the table of the last decision still)
            if prev is not None and prev[0] == s - 1 and s >= self._settle:
                self._observe(s, self.tier(s), now - prev[1], spent)
            prev = (s, now)
        self._prev = prev
        bare = [b for _, b in self._bases]
        if log and bare:  # the bookkeeping's cost, per step, as a fraction of a bare step
            own = self._own / len(log) / _median(bare)
            self._own_cost = own if not self._own_cost else 0.9 * self._own_cost + 0.1 * own
        self._own = 0.0
        # the costs, every ``_MEASURE`` decisions once known (a measurement takes as long as
        # the bookkeeping of the steps in between)
        self._decisions += 1
        if self.top not in self._costs or self._decisions % _MEASURE == 0:
            self._measure()
        plan = self._plan() or self.plan
        if self.timed < Tier.GRADIENTS and plan.grad > 1 - self._probe:
            # leave a share of the steps recording nothing: the reference every cost is
            # measured against must be as fresh as the steps it is compared with
            grad = 1 - self._probe
            plan = Plan(top=min(plan.top, grad), grad=grad)
        if self.agree is not None:
            top, grad = self.agree((plan.top, plan.grad))
            plan = Plan(top=float(top), grad=float(grad))
        self.plan = plan
        # quiet stretches record what the plan records on every step (a monitor that times
        # the gradients: they stay on every step); also under a plan that records everything
        # everywhere, whose cost would otherwise be measured against bare-step estimates from
        # the warm-up only (its first steps are slower: everything then looked cheaper than
        # it was). None when the gradients are the top tier, timed, and on every step
        every_step = self.timed >= Tier.GRADIENTS and plan.grad >= 1
        self._quiet_on = not (every_step and self.top == Tier.GRADIENTS)
        self._quiet_tier = Tier.GRADIENTS if every_step and self.top == Tier.ALL else Tier.NONE
        self._asked = (-1, self.top)  # a step asked about before this decision: ask again
        self._table_start, self._table = step, []
        self._table = self._tiers_from(step, self._decide_every)
        self._next = step + self._decide_every
        # what the steps under this plan should cost beyond the quiet stretches' steps, which
        # measure the realised cost
        quiet = self._costs.get(self._quiet_tier, self._costs.get(Tier.NONE, 0.0))
        self._expected = self.expected - quiet

    def _realised(self) -> None:
        """End of a quiet stretch: the steps just before it, under the plan, against the
        stretch's (its first steps left out: a recorded step leaves some of its cost to the
        steps after it, which no single step's time shows: freeing tensors, collections).
        ``factor`` = realised / expected cost, at least 1, pooled over the stretches (each
        weighs ``_KEEP`` times the next: about the latest ten count; one stretch scatters by a
        third of the cost on a 2 ms step, and the costs measured early in a run may be off):
        the plans take the costs above the stretches' tier as ``factor`` times measured."""
        quiet, self._quiet = self._quiet[_SPILL:], []
        # a mean (a trimmed one would cut out the few steps recording everything) of the steps
        # no longer than twice the slowest tier's typical step: a pause in the loop (an
        # evaluation, a checkpoint; another model's steps) is no cost of watching; and of the
        # steps whose plan had an expected cost (NaN: costs not measured yet)
        longest = 2 * max(statistics.median(v) for v in self._times.values() if v)
        kept = [(x, e) for x, e in self._recent if x <= longest and e == e]
        quiet = [x for x in quiet if x <= longest]
        if len(quiet) < 3 or len(kept) < 16:
            return
        base = _trimmed_mean(quiet)
        expected = statistics.fmean(e for _, e in kept)
        if base <= 0 or expected < 0.1 * self.fraction:
            return  # too little spent to tell a factor from noise
        realised = statistics.fmean(x for x, _ in kept) / base - 1
        r, e = self._pooled
        r, e = self._pooled = (_KEEP * r + realised, _KEEP * e + expected)
        self.factor = min(max(r / e, 1.0), _MAX_FACTOR)

    def _record(self, tier: Tier, seconds: float, spent: float) -> None:
        """A step's time as a ratio to a bare step's: for a tier the monitor times, its time
        over the time less the monitor's; above, its time over the latest estimates of a bare
        step from the tiers below (machines drift: other processes, clocks, data; a tier
        recorded on a few steps in a hundred is compared with steps taken at the same time,
        not long before)."""
        last, self._last = self._last, tier
        self._times[tier].append(seconds)  # for the realised cost (see _realised)
        if tier <= self.timed:
            base = seconds - spent
            if base <= 0:
                return
            self._timed[tier].append((base, spent))
            if last == self.top and Tier.NONE < self.timed < self.top:
                ref = [b for _, b in self._bases][-_LOCAL:]
                if len(ref) >= 3:
                    self._spill.append(base / _median(ref) - 1)
                return  # not a bare step: the top tier left it some of its cost
            self._bases.append((tier, base))
            return
        ref = [b for t, b in self._bases if t < tier][-_LOCAL:]
        if len(ref) < 3:
            return
        bare = _median(ref)
        if bare > 0:
            self._ratios[tier].append(seconds / bare)
        if tier < self.top and tier in self._costs:  # this step, less its cost: a bare step
            self._bases.append((tier, seconds / (1 + self._costs[tier])))

    def _measure(self) -> None:
        """The costs of the tiers from the steps' times."""
        for t in self._tiers:
            if t <= self.timed:
                if self._timed[t]:
                    bases, spent = zip(*self._timed[t], strict=True)
                    bare = statistics.median(bases)
                    self._costs[t] = max(statistics.fmean(spent) / bare, 0.0) if bare > 0 else 0.0
            elif self.timed > Tier.NONE:
                if self._ratios[t]:
                    self._costs[t] = max(_robust_mean(self._ratios[t]) - 1, 0.0)
                if t == self.top and len(self._spill) >= 3:  # and what a run of it leaves to
                    # the step after it, shared by the run's steps
                    spill = _robust_mean(self._spill) / Plan.RUN
                    self._costs[t] = max(self._costs[t] + spill, 0.0)
            elif self._ratios[t]:
                self._costs[t] = max(_trimmed_mean(list(self._ratios[t])) - 1, 0.0)
        if Tier.GRADIENTS in self._costs and Tier.ALL in self._costs:
            self._costs[Tier.ALL] = max(self._costs[Tier.ALL], self._costs[Tier.GRADIENTS])

    def _plan(self) -> Plan | None:
        """The plan the measured costs give; None until the top tier's cost is known."""
        if self.top not in self._costs:
            return None
        c_none = self._costs.get(Tier.NONE, 0.0)
        c_top = max(self._costs[self.top] - c_none, 0.0)
        c_grad = None
        if self.top == Tier.ALL:
            c_grad = max(self._costs.get(Tier.GRADIENTS, c_top + c_none) - c_none, 0.0)
        # the fixed cost is paid on every step: what is left is shared by the recorded ones;
        # ``factor`` (realised / expected) scales the costs above the quiet stretches' tier,
        # against which it was measured (the gradients, when they go on every step: then a
        # cost found higher than expected takes steps from the top tier, not from them)
        aim = max(self.fraction - c_none - self._own_cost, 0.0)
        f = self.factor
        if c_grad is not None and self._quiet_tier == Tier.GRADIENTS:
            return allocate(aim, c_grad + f * (c_top - c_grad), c_grad, self._min_share)
        return allocate(aim, f * c_top, None if c_grad is None else f * c_grad, self._min_share)


# clocks of real time: the budget times its own bookkeeping with perf_counter (a fake clock
# times it with itself: it does not move while the budget works)
_REAL_CLOCKS = (time.perf_counter, time.thread_time, time.process_time, time.monotonic)
_LOCAL = 9  # estimates of a bare step whose median is the reference of the steps above them
_TIMED_WINDOW = 512  # latest steps of a timed tier whose mean cost is taken
# the share cut from each end of the ratios of the top tier's steps, and of its spills, when
# the tiers below are timed (see _robust_mean): a pause in the loop (an evaluation; in an
# interleaved benchmark the other models' blocks) that falls on one of these few steps is no
# cost (with a tenth cut, one pause made everything look 6x dearer than it was)
_CUT = 0.25
_MEASURE = 4  # decisions between two measurements of the costs, once they are known
_KEEP = 0.8  # weight of the stretches before the latest one in the realised cost (see _realised)
_SPILL = 3  # first steps of a quiet stretch left out (costs the recorded steps left)
# realised / expected cost before a quiet stretch measured it (on the California model the
# realised cost was 1.2-1.7x what the steps' own times predicted), and the most it may be
_FIRST_FACTOR, _MAX_FACTOR = 1.25, 3.0


def _median(values: Iterable[float]) -> float:
    """statistics.median of a few values, in a third of its time (it runs every step)."""
    xs = sorted(values)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def _robust_mean(values: Iterable[float]) -> float:
    """The mean of the middle half of the values (the median of fewer than 8): a pause in the
    loop that falls on a few of them is no cost (with a tenth cut from each end, or none of
    three, one pause on the 50x512 MLP made everything look 8x dearer than a bare step)."""
    xs = list(values)
    return _median(xs) if len(xs) < 8 else _trimmed_mean(xs, _CUT)


def _trimmed_mean(values: list[float], cut: float = 0.1) -> float:
    """The mean without the lowest and highest ``cut`` of the values: a step's cost is paid on
    average (a median misses the skew of step times), but a pause in the loop is no cost."""
    xs = sorted(values)
    k = int(len(xs) * cut)
    return statistics.fmean(xs[k : len(xs) - k] if len(xs) > 2 * k else xs)


def allocate(budget: float, c_top: float, c_grad: float | None, min_share: float) -> Plan:
    """Shares of steps that keep ``top * c_top + (grad - top) * c_grad <= budget``.

    ``c_top``: cost of the top tier; ``c_grad``: cost of gradients only (None when the top
    tier is the gradients). Gradients go on every step when they fit in three quarters of the
    budget, and the top tier takes the rest; otherwise the top tier takes a quarter and
    gradients the other three. No share falls below ``min_share``.

        >>> allocate(0.05, 0.02, 0.01, 1e-3)
        Plan(top=1.0, grad=1.0)
        >>> round(allocate(0.05, 0.36, 0.02, 1e-3).top, 4)
        0.0882
        >>> p = allocate(0.05, 0.40, 0.04, 1e-3)
        >>> round(p.top, 4), round(p.grad, 4)
        (0.0312, 0.9688)
    """
    if c_top <= budget:
        return Plan(1.0, 1.0)
    if c_grad is None:
        share = max(budget / c_top, min_share)
        return Plan(share, share)
    if c_grad <= 0.75 * budget:
        return Plan(max((budget - c_grad) / (c_top - c_grad), min_share), 1.0)
    top = max(budget / 4 / c_top, min_share)
    grad = min(top + (budget - top * c_top) / c_grad, 1.0)
    return Plan(top, max(grad, top))


def schedule(
    every: int | None,
    budget: float | Schedule | None,
    *,
    top: Tier = Tier.ALL,
    **budget_kw: object,
) -> Schedule:
    """The schedule a monitor's ``every=`` / ``budget=`` arguments ask for.

    ``every=N`` is a fixed schedule (the budget is then not used); otherwise the budget
    (default 5%). ``budget=None`` with no ``every`` records everything on every step. ``top``:
    the most a step records (``Tier.GRADIENTS`` for a monitor without layer statistics). A
    :class:`Schedule` given as ``budget`` is used as it is (e.g. a :class:`Budget` with other
    settings); its tiers above ``top`` are read as ``top``.
    """
    if every is None and callable(getattr(budget, "tier", None)):
        return budget  # type: ignore[return-value]
    if every is not None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise UsageError(f"every must be a whole number >= 1, got {every!r}")
        return Every(every, top)
    if budget is None:
        return Every(1, top)
    return Budget(budget, top=top, **budget_kw)  # type: ignore[arg-type]
