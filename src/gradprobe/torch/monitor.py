"""The PyTorch monitor: one line to watch a model's gradients, activations and backward signal.

The parts, each with one job:

- :mod:`gradprobe.torch._hooks`: arming and hooks (layers, activations, backward signal, the
  optimizer's step, a GradScaler's skipped steps);
- :mod:`gradprobe.torch._step`: the typed per-step accumulator and its reduction to rows;
- :mod:`gradprobe.torch._reduce`: the reducer, chosen once at :func:`watch` (torch on any
  device, or the fused C pass for plain CPU tensors);
- :mod:`gradprobe.storage`: where the rows go.

When each number is read:

- gradients in the optimizer's step *pre*-hook: after the last backward, before the update, so
  gradient accumulation, clipping and AMP unscaling are seen as applied; with
  ``optimizer.step(closure)``, right after the closure's first call (the gradients the step
  applies; for LBFGS, the gradient at the step's starting point); in :meth:`Monitor.step` when
  no optimizer is given;
- the update ``W_after - W_before`` in the step *post*-hook;
- activations and the backward signal ``dL/dh`` during the forwards and backwards of a recorded
  step that lead to it (every micro-batch under gradient accumulation; forwards with no backward,
  e.g. evaluation, are dropped; forwards under ``no_grad``/``inference_mode`` are never seen).
  On steps that record only gradients, or nothing, no module hook is registered at all.

Under ``torch.compile`` the hooks stay registered and switch themselves off on steps that are
not recorded (:class:`gradprobe.torch._hooks.Capture`); inside the compiled region they call only
:mod:`gradprobe.torch._compiled`, so gradprobe causes no graph break.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch
from torch import nn

from gradprobe.budget import Budget, Every, Schedule, Tier, schedule
from gradprobe.errors import CaptureError, UsageError
from gradprobe.records import TABLES
from gradprobe.storage import Storage
from gradprobe.torch import _reduce
from gradprobe.torch._dist import agree_min, distributed, layout
from gradprobe.torch._hooks import Capture, ScalerPatch, StepHooks
from gradprobe.torch._rows import PendingRows
from gradprobe.torch._step import DepthOrder, Reading, Recorder, StepLayers
from gradprobe.torch._structure import trainable


class Monitor:
    """Records per-layer gradient, activation and backward-signal statistics of a model.

    Create it with :func:`watch`. Use it as a context manager, or call :meth:`detach` when done;
    after detaching, the model behaves bit for bit as if it had never been watched.

    Which steps record what is its :attr:`schedule` (:mod:`gradprobe.budget`): by default a
    :class:`~gradprobe.budget.Budget` that keeps the measured cost of watching within 5% of the
    step time, recording the gradients on every step when they fit and everything (layer
    activations, backward signal) on a share of the steps; with ``every=N`` an
    :class:`~gradprobe.budget.Every`. Before each step it asks the schedule the step's tier
    (module hooks are armed only for a step that records everything), and tells it when the
    step ends (the schedule times the steps).

    :attr:`cost` reports the measured cost of each tier and the shares of steps chosen; the
    records' ``tier`` column says what each step carries.

    Example::

        >>> import torch, gradprobe
        >>> nn = torch.nn
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> with gradprobe.watch(model, opt) as mon:
        ...     for _ in range(3):
        ...         opt.zero_grad()
        ...         model(torch.randn(16, 4)).pow(2).mean().backward()
        ...         opt.step()
        >>> mon.to_pandas()[["step", "layer", "param", "depth"]].head(2).values.tolist()
        [[0, '0', 'weight', 0], [0, '0', 'bias', 0]]
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        every: int | None = None,
        budget: float | Schedule | None = 0.05,
        activations: bool = True,
        backward: bool = True,
        per_example: bool = False,
        log_dir: str | Path | None = None,
        max_rows_in_memory: int = 100_000,
        reducer: str = "auto",
        scaler: Any = None,
        all_ranks: bool = False,
        tensorboard: bool = False,
    ) -> None:
        _check(model, optimizer)
        self._top = Tier.ALL if activations or backward or per_example else Tier.GRADIENTS
        self.schedule = schedule(every, budget, top=self._top, clock=_step_clock(model))
        # a budget is told the time of the monitor's own code in each step
        self._timed = self.schedule if isinstance(self.schedule, Budget) else None
        self._clock: Callable[[], float] = time.perf_counter
        if isinstance(self.schedule, Budget):
            # the monitor's own code, timed as the steps are; the thread's CPU time costs a
            # system call (0.6 us), and on this thread, in code this short, wall time is the same
            clock = self.schedule.clock
            self._clock = time.perf_counter if clock is time.thread_time else clock
            # the gradients are read in the optimizer's hooks, whose time the monitor takes
            # (see _advance): the budget need not measure them against unrecorded steps
            self.schedule.timed = min(Tier.GRADIENTS, self.schedule.top)
            if self.schedule.agree is None and distributed():
                self.schedule.agree = agree_min  # ranks must record the same steps
        self.model, self.optimizer, self.every = model, optimizer, every
        self.budget = budget if every is None else None
        self.activations, self.backward, self.per_example = activations, backward, per_example
        if scaler is not None and not all(
            callable(getattr(scaler, a, None)) for a in ("step", "get_scale")
        ):
            raise UsageError(
                f"scaler must be a torch.amp.GradScaler, the one that steps this optimizer; "
                f"got {type(scaler).__name__}; pass scaler=your_grad_scaler or leave it out"
            )
        self.scaler = scaler
        self.reducer = _reduce.choose(reducer, model)
        params, owners = trainable(model)
        if not params:
            raise CaptureError(
                f"{type(model).__name__} has no trainable parameters (requires_grad=True): "
                "nothing to watch"
            )
        rank = _rank()
        pending: list[PendingRows] = []  # the storage's last flush must not hold the monitor

        def before_flush() -> None:
            for rows in pending:
                rows.materialize()

        self._storage = Storage(
            log_dir,
            rank=rank,
            write=rank == 0 or all_ranks,
            max_rows_in_memory=max_rows_in_memory,
            tensorboard=tensorboard,
            before_flush=before_flush,
        )
        self._buffers = self._storage.buffers
        self._rows = PendingRows(self._buffers["params"], self._buffers["layers"])
        pending.append(self._rows)
        self._layers = StepLayers()
        self._order = DepthOrder(list(owners.values()))
        self._kinds: dict[str, str] = {}
        self._recorder = Recorder(
            self._rows, self.reducer, self._order, self._kinds, per_example=per_example
        )
        self._capture = Capture(
            model,
            owners,
            self._layers,
            self._order,
            self.reducer,
            activations=activations,
            backward=backward,
            per_example=per_example,
        )
        self._capture.grads_gone = self._grads_gone
        if _compiled(model) or _dynamo_ran():
            # dynamo does not guard on empty hook dicts: code it compiled before these hooks
            # existed would keep running without them
            torch._dynamo.reset()
        self._capture.sticky = _compiled(model)
        self._codes = 0  # how many code objects dynamo had compiled when the hooks went off
        self._set_params(params, owners)
        self._step = 0
        self._spent = 0.0  # seconds of the monitor's own code in the current step
        self._tier = min(self.schedule.tier(0), self._top)
        self._reading: Reading | None = None
        self._attached = True
        self._steps: StepHooks | None = None
        self._scaler: ScalerPatch | None = None
        self._scan_key: int | None = None  # how many param groups the optimizer had
        if optimizer is not None:
            self._steps = StepHooks(optimizer, self, _ticker_clock(self.schedule))
            self._scan_key = len(optimizer.param_groups)
            if scaler is not None:
                self._scaler = ScalerPatch(scaler, self._steps, self._skipped)
        self._capture.arm()

    # ------------------------------------------------------------------ public
    @property
    def steps_seen(self) -> int:
        """How many steps (optimizer steps, or calls of :meth:`step`) the monitor has seen."""
        ticker = self._ticker()
        return self._step if ticker is None else ticker.step

    @property
    def attached(self) -> bool:
        return self._attached

    @property
    def cost(self) -> dict[str, float]:
        """What watching costs and how often each statistic is recorded.

        ``share_gradients`` / ``share_all``: the fraction of steps that record the gradients
        (and updates) / everything. Under a budget also ``budget`` (the fraction given),
        ``none``, ``gradients`` and ``all`` (the measured cost of a step recording nothing /
        the gradients / everything, as a fraction of a bare step's time; absent until
        measured) and ``expected`` (the cost of the current shares, from those measurements).
        """
        sched = self.schedule
        if isinstance(sched, Budget):
            share_all = sched.plan.top if self._top == Tier.ALL else 0.0
            out = {"budget": sched.fraction, **sched.costs, "expected": sched.expected}
            return out | {"share_gradients": sched.plan.grad, "share_all": share_all}
        if not isinstance(sched, Every):
            return {}
        share = 1 / sched.n
        return {"share_gradients": share, "share_all": share if self._top == Tier.ALL else 0.0}

    def step(self) -> None:
        """Record the gradients now (call after ``backward``) when no optimizer was given."""
        if self.optimizer is not None:
            raise UsageError(
                "this monitor reads gradients in the optimizer's step hooks; "
                "do not call monitor.step() as well (or watch without the optimizer)"
            )
        t0 = self._clock()
        if self._recording():
            self._rescan_if_changed(None)
            reading = self._read(None)
            self._finish(reading, None)
        self._advance(t0)

    def to_pandas(self, table: str = "params") -> pd.DataFrame:
        """The records as one tidy long table: ``params`` (default) or ``layers``.

        See :mod:`gradprobe.records` for the columns.
        """
        if table not in TABLES:
            raise UsageError(f"unknown table {table!r}: expected one of {', '.join(TABLES)}")
        self._rows.materialize()
        return self._buffers[table].to_pandas()

    def flush(self) -> None:
        """Write the records held in memory to ``log_dir`` (no-op without one)."""
        self._storage.flush()

    def detach(self) -> None:
        """Remove every hook this monitor added and write the rows held to ``log_dir``;
        records stay readable. Idempotent."""
        self._capture.remove()
        if self._steps is not None:
            self._steps.remove()
        if self._scaler is not None:
            self._scaler.remove()
        self._attached = False
        self._layers.clear()
        self._recorder.clear()
        self._reading = None
        self._storage.close()

    def _repr_html_(self) -> str:
        """A compact summary and the findings, for notebooks."""
        from gradprobe.views.notebook import summary_html

        return summary_html(self)

    def plot(self) -> list[Any]:
        """The per-layer charts as matplotlib figures."""
        from gradprobe.views.notebook import plot

        return plot(self)

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def __repr__(self) -> str:
        sched = self.schedule
        if isinstance(sched, Budget):
            how = f"budget={sched.fraction:.0%}"
        elif isinstance(sched, Every):
            how = f"every={sched.n}" if self.every is not None else "budget=None"
        else:
            how = f"schedule={type(sched).__name__}"
        return (
            f"Monitor({type(self.model).__name__}, {how}, "
            f"steps_seen={self.steps_seen}, "
            f"rows={len(self._buffers['params']) + self._rows.pending_params()})"
        )

    # ------------------------------------------------------------- the step
    def _recording(self) -> bool:
        return self._attached and self._tier != Tier.NONE

    def _ticker(self) -> Any:
        return None if self._steps is None else self._steps.ticker

    def _catch_up(self) -> None:
        """The steps the C hooks ended since our hooks last ran (see StepHooks): to the
        schedule, and the step count."""
        ticker = self._ticker()
        if ticker is None or ticker.step == self._step:
            return
        ended = ticker.take()
        if isinstance(self.schedule, Budget):
            self.schedule.ended(ended)
        self._step = ticker.step

    def before_update(self, optimizer: torch.optim.Optimizer) -> None:
        """Read the gradients (the optimizer's pre-hook, or a closure's first call)."""
        if self._recording():  # (a reading left by a step that raised is replaced)
            t0 = self._clock()
            self._catch_up()
            self._rescan_if_changed(optimizer)
            self._reading = self._read(optimizer)
            self._spent += self._clock() - t0
        else:
            self._catch_up()

    def after_update(self, optimizer: torch.optim.Optimizer) -> None:
        """Measure the update and record the step (the optimizer's post-hook)."""
        t0 = self._clock()
        self._catch_up()
        reading = self._reading
        if reading is not None:
            self._reading = None
            self._layers.clear()  # captures after the read (later closure calls) do not count
            self._capture.drop()
            self._finish(reading, optimizer)
        self._advance(t0)

    def _skipped(self, optimizer: torch.optim.Optimizer) -> None:
        """GradScaler found inf/NaN and did not call ``optimizer.step``: a skipped step."""
        t0 = self._clock()
        self._catch_up()
        if self._recording():
            self._rescan_if_changed(optimizer)
            reading = self._read(None, skipped=True)
            self._finish(reading, None)
        self._layers.clear()
        self._capture.drop()
        self._reading = None
        self._advance(t0)

    def _grads_gone(self) -> bool:
        return all(p.grad is None for _, _, p in self._recorder.params)

    def _read(self, optimizer: torch.optim.Optimizer | None, skipped: bool = False) -> Reading:
        self._capture.end_pending()
        grad_scale, loss_scale, found_inf = self._scales(optimizer)
        layers = self._layers.take()
        self._capture.take_compiled(layers)
        return self._recorder.read(
            optimizer,
            layers,
            grad_scale=grad_scale,
            loss_scale=loss_scale,
            skipped=skipped,
            found_inf=found_inf,
        )

    def _finish(self, reading: Reading, optimizer: torch.optim.Optimizer | None) -> None:
        tier = "gradients" if self._tier == Tier.GRADIENTS else "all"
        if self._recorder.finish(self._step, reading, optimizer, tier):
            self._capture.eager = True  # an output changed in place: reduce outputs at once

    def _scales(
        self, optimizer: torch.optim.Optimizer | None
    ) -> tuple[torch.Tensor | float, torch.Tensor | float, torch.Tensor | None]:
        """(scale of the gradients, scale of dL/dh, the scaler's found_inf) under a GradScaler,
        as copies of the scaler's tensors, read on the host with the step's numbers (no
        synchronisation here; the copies keep today's values whatever the scaler does next).

        A fused optimizer gets ``grad_scale`` and ``found_inf`` from the scaler and its
        gradients stay scaled; otherwise the scaler has unscaled them already, and only the
        backward signal is scaled, by the ``scaler`` given to :func:`watch`."""
        gs = getattr(optimizer, "grad_scale", None) if optimizer is not None else None
        if gs is not None:
            fi = getattr(optimizer, "found_inf", None)
            scale = gs.detach().clone() if isinstance(gs, torch.Tensor) else float(gs)
            if fi is not None:
                fi = fi.detach().clone() if isinstance(fi, torch.Tensor) else torch.tensor(fi)
            return scale, scale, fi
        sc = self.scaler
        if sc is None or not sc.is_enabled():
            return 1.0, 1.0, None
        now = sc._get_scale_async() if hasattr(sc, "_get_scale_async") else None
        if isinstance(now, torch.Tensor):
            return 1.0, now.detach().clone(), None
        return 1.0, float(sc.get_scale()), None

    def _advance(self, t0: float) -> None:
        """The step has ended (the monitor's code in this hook began at ``t0``): tell the
        schedule, with the time the monitor's own code took in the step, and arm the hooks
        for the next step's tier (module hooks only when it records everything). What runs
        here after the step has ended counts in the next step's time (the next Python hook's
        ``spent``), but for arming and disarming: they belong to the tier that needs the hooks
        (whose cost the budget measures from step times, and from the step after it)."""
        t1 = None
        if self._attached:
            if self._timed is not None:
                self._timed.done(self._step, self._spent + (self._clock() - t0))
                t1 = self._clock()
            else:  # a schedule of the user's: done(step)
                self.schedule.done(self._step)
        self._spent = 0.0
        self._step += 1
        self._tier = min(self.schedule.tier(self._step), self._top)
        cap = self._capture
        if self._attached and self._tier == self._top:
            if not (cap.armed and cap.on):
                if not cap.armed and _dynamo_codes() != self._codes:
                    # dynamo compiled code while the hooks were off: maybe this model, compiled
                    # after watch on a step not recorded, whose graph would never see the hooks
                    torch._dynamo.reset()
                    cap.sticky = True
                cap.arm()
                if cap.armed:  # the hooks went on (none for the gradients only)
                    t1 = None
        elif cap.armed:
            cap.disarm()
            self._codes = _dynamo_codes()
            t1 = None
        ticker = self._ticker()
        if ticker is not None:  # the steps from here that the C hooks may end alone
            ticker.step = self._step
            quiet = getattr(self.schedule, "quiet_until", None)
            ticker.quiet_until = quiet(self._step) if self._attached and quiet else self._step
        if t1 is not None:
            self._spent = self._clock() - t1

    # ----------------------------------------------------- what is watched
    def _set_params(
        self, params: list[tuple[str, str, torch.Tensor]], owners: dict[nn.Module, str]
    ) -> None:
        self._recorder.set_params(params, layout(self.model, params))
        self._kinds.clear()
        self._kinds.update({name: type(m).__name__ for m, name in owners.items()})
        self._order.add_layers(list(owners.values()))
        self._frozen = [p for p in self.model.parameters() if not p.requires_grad]

    def _rescan_if_changed(self, optimizer: torch.optim.Optimizer | None) -> None:
        """Parameters unfrozen after :func:`watch`, or param groups added, are recorded from
        the step they appear on (a cheap check per recorded step; a re-scan when it fires)."""
        key = len(optimizer.param_groups) if optimizer is not None else None
        grown = optimizer is not None and key != self._scan_key
        if not grown and not (self._frozen and any(p.requires_grad for p in self._frozen)):
            return
        self._scan_key = key
        params, owners = trainable(self.model)
        self._set_params(params, owners)
        armed, sticky, on = self._capture.armed, self._capture.sticky, self._capture.on
        self._capture.remove()
        self._capture.set_owners(owners)
        if sticky:  # compiled graphs traced the old hooks: trace the new ones
            torch._dynamo.reset()
            self._capture.sticky = True
        if armed:
            self._capture.arm()
            self._capture.on = on


def _check(model: Any, optimizer: Any) -> None:
    if isinstance(model, type):
        raise CaptureError(
            f"watch() expects a model instance, got the class {model.__name__}: "
            f"instantiate it first (watch({model.__name__}(...), optimizer))"
        )
    if not isinstance(model, nn.Module):
        raise CaptureError(
            f"watch() expects a torch.nn.Module, got {type(model).__name__}; "
            "pass the model itself (e.g. watch(model, optimizer))"
        )
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise CaptureError(
            f"watch() expects a torch.optim.Optimizer as optimizer, got {type(optimizer).__name__}"
        )


def _ticker_clock(schedule: Schedule) -> int | None:
    """The clock code of the C step hooks (:class:`gradprobe._fused.Ticker`) for ``schedule``:
    the one a budget times steps with (0: the thread's CPU time, 1: perf_counter), none for a
    fixed schedule (2), and no C hooks (None) for a schedule that must hear of every step, or a
    clock they cannot read."""
    if type(schedule) is Every:  # (exactly: a subclass may want to hear of every step)
        return 2
    if type(schedule) is Budget:
        for code, (clock, name, posix) in enumerate(_C_CLOCKS):
            # the C hooks read the POSIX clock: it must be the one Python reads
            if schedule.clock is clock:
                same = time.get_clock_info(name).implementation == posix
                return code if same else None
    return None


_C_CLOCKS: tuple[tuple[Callable[[], float], Literal["thread_time", "perf_counter"], str], ...] = (
    (time.thread_time, "thread_time", "clock_gettime(CLOCK_THREAD_CPUTIME_ID)"),  # code 0
    (time.perf_counter, "perf_counter", "clock_gettime(CLOCK_MONOTONIC)"),  # code 1
)


def _step_clock(model: nn.Module) -> Callable[[], float]:
    """What the budget times steps with. On the CPU: the training thread's CPU time, which
    other processes sharing the machine do not inflate (measured on a loaded 2-core machine:
    wall-clock medians of a 2.5 ms step swung by 100%, CPU time by 2%), and which counts
    gradprobe's hooks and reductions (they run in that thread). With parameters on an
    accelerator, or where the thread clock is coarse (Windows), wall time."""
    if any(p.device.type != "cpu" for p in model.parameters()):
        return time.perf_counter
    if time.get_clock_info("thread_time").resolution > 1e-6:
        return time.perf_counter
    return time.thread_time


def _compiled(model: nn.Module) -> bool:
    """Compiled by ``torch.compile(model)`` or ``model.compile()``."""
    if "torch._dynamo" not in sys.modules:
        return False
    return isinstance(model, torch._dynamo.eval_frame.OptimizedModule) or (
        getattr(model, "_compiled_call_impl", None) is not None
    )


def _dynamo_ran() -> bool:
    """Whether dynamo compiled any code in this process (since its last reset)."""
    return _dynamo_codes() > 0


def _dynamo_codes() -> int:
    """How many code objects dynamo compiled in this process (since its last reset)."""
    frames = sys.modules.get("torch._dynamo.convert_frame")
    return 0 if frames is None else len(frames.input_codes.seen)


def _rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def watch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    every: int | None = None,
    budget: float | Schedule | None = 0.05,
    activations: bool = True,
    backward: bool = True,
    per_example: bool = False,
    log_dir: str | Path | None = None,
    max_rows_in_memory: int = 100_000,
    reducer: str = "auto",
    scaler: Any = None,
    all_ranks: bool = False,
    tensorboard: bool = False,
) -> Monitor:
    """Watch ``model`` during training; returns a :class:`Monitor`.

    With an ``optimizer``, gradients are read in its step pre-hook (after the last backward,
    before the update) and the update in its post-hook: the training loop stays as it is.
    ``optimizer.step(closure)`` works too: the gradients are read right after the closure's
    *first* call, i.e. the gradients the step applies (for LBFGS, which calls the closure several
    times, the gradient at the step's starting point); layer statistics come from that call.
    Without an optimizer, call ``monitor.step()`` after ``backward()``.

    By default watching costs at most ``budget`` (5%) of the step time, measured as the run
    goes: the monitor times its own code in the optimizer's hooks (the fixed cost of a step
    recording nothing, and the reading of the gradients and updates) and the steps that
    record everything (against the steps around them, and the step after them), and records
    the gradients on every step when they fit in the budget, and the activations and
    backward signal (hooks on every layer) on an evenly spread share of the steps that keeps
    the average cost inside it. Step 0 records everything; the first ~15 steps measure; the
    shares are then revised every 64 steps. ``monitor.cost`` says what was measured and which
    shares were chosen; the ``tier`` column of the records says what each step carries
    (``"gradients"``: no ``layers`` rows that step, ``"all"``).

    ``every=N`` overrides the budget with a fixed schedule: everything on steps 0, N, 2N, ...
    and nothing in between (``every=1``: everything on every step, whatever it costs, as does
    ``budget=None``). ``budget=0.2`` allows 20%; ``budget=`` also takes a schedule object
    (:mod:`gradprobe.budget`, e.g. ``Budget(0.05, decide_every=16)``). Under
    ``torch.distributed`` the ranks agree on the shares (an ``all_reduce`` every 64 steps), so
    every rank records the same steps.

    - Steps that record the gradients only, or nothing, run with no module hook at all.
    - ``torch.compile``: a model compiled before or after ``watch`` trains with no graph break
      caused by gradprobe and the same numbers as eagerly (its hooks stay registered and are
      gated: steps without layer statistics cost a second graph, compiled once). Dynamo does
      not see hooks added after it compiled code, so when the model is already compiled, or
      dynamo compiled anything in this process, ``watch`` calls ``torch._dynamo.reset()``:
      every compiled model of the process recompiles once (so does the first step recording
      everything after dynamo compiled code on a step without layer statistics). Under
      compile, every forward with grad enabled in a recorded step counts (also one that leads
      to no backward), and ``per_example`` is not measured.
    - Only training steps count: forwards under ``torch.no_grad()``/``inference_mode`` are not
      seen, and forwards with no backward before the next forward or step (evaluation) are
      dropped. Under gradient accumulation all micro-batches since the last step count.
    - ``per_example=True`` also records, for Linear weights, the RMS over the batch of
      per-example gradient norms ||delta_b||*||x_b||.
    - ``log_dir``: rows go to Parquet files there (one file set per rank), written when
      ``max_rows_in_memory`` rows are held, on :meth:`Monitor.flush`, :meth:`Monitor.detach`,
      leaving the ``with`` block (also on an exception) and at interpreter exit. Without it,
      at most ``max_rows_in_memory`` rows per table stay in memory (older ones spill to a
      private temporary folder). Under ``torch.distributed`` only rank 0 writes unless
      ``all_ranks=True``. ``tensorboard=True`` also writes TensorBoard event files there.
    - ``reducer``: how tensors become numbers, chosen once: ``"torch"`` (torch operations on
      the tensors' device, never synchronising), ``"fused"`` (the C pass for plain dense CPU
      tensors; any other tensor goes through torch), or ``"auto"`` (default: fused when it is
      built and the model is on the CPU, else torch).
    - AMP: gradients are recorded unscaled. A fused/foreach optimizer stepped by a GradScaler
      (``Adam(fused=True)``), whose gradients stay scaled, is recognised by itself: its numbers
      are divided by the scale, and a step the scaler skips (inf/NaN found) is a row flagged
      ``skipped``. Pass ``scaler=scaler`` (the ``torch.amp.GradScaler``) for the rest: then
      ``backward_norm`` is unscaled too (else it is in loss-scaled units), and steps the scaler
      skips without calling ``optimizer.step`` are recorded as ``skipped`` rows (gradient and
      backward numbers NaN: not measured), never as non-finite gradients.
    - Parameters that become trainable after ``watch`` (unfrozen) and param groups added later
      (``optimizer.add_param_group``) are recorded from the step they appear on.
    """
    return Monitor(
        model,
        optimizer,
        every=every,
        budget=budget,
        activations=activations,
        backward=backward,
        per_example=per_example,
        log_dir=log_dir,
        max_rows_in_memory=max_rows_in_memory,
        reducer=reducer,
        scaler=scaler,
        all_ranks=all_ranks,
        tensorboard=tensorboard,
    )
