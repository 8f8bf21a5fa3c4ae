"""The device path (``reducer="torch"``): reductions stay on the tensors' device, hooks never
synchronise, and a recorded step moves its numbers to the host in exactly one transfer.

No accelerator is needed to check this: :class:`HostReads` counts every way a tensor's values can
reach the host (``.cpu()``, ``.to("cpu")``, ``.numpy()``, ``.tolist()``, ``.item()``, ``float()``,
``bool()``, ``np.asarray``, ...) at the torch-function level, as a device would see them, and every
synchronising op at the dispatch level (``aten::_local_scalar_dense``, copies from a device to the
CPU, ops whose output shape depends on the data). On the CPU those calls are free, so they would go
unnoticed; on a GPU each one is a stall. The ``meta`` device, which has no data at all, proves the
same for the hooks and the reducer: any read of a value there raises. The CUDA test runs the same
count on a real device where one exists.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import gradprobe
from gradprobe.torch import _native
from gradprobe.torch import _reduce as R
from gradprobe.torch._activations import Activation

# ------------------------------------------------------------------------------ the counter

_READS = {  # a tensor's values read on the host (on a device: a transfer and a stall)
    "numpy",
    "tolist",
    "item",
    "__float__",
    "__int__",
    "__bool__",
    "__index__",
    "__complex__",
    "__array__",
    "__format__",
}
_aten = torch.ops.aten
_DATA_DEPENDENT = {  # ops whose output shape depends on the values: a device must synchronise
    _aten.nonzero.default,
    _aten.masked_select.default,
    _aten.is_nonzero.default,
    _aten.equal.default,
    _aten._unique2.default,
    _aten.unique_dim.default,
    _aten.unique_consecutive.default,
}


class _Functions(TorchFunctionMode):
    def __init__(self, owner: HostReads) -> None:
        super().__init__()
        self.owner = owner

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        out = func(*args, **kwargs)
        if name in _READS and args and isinstance(args[0], torch.Tensor):
            self.owner._note(self.owner.transfers, f"{name} {tuple(args[0].shape)}")
        return out


class _Dispatch(TorchDispatchMode):
    def __init__(self, owner: HostReads) -> None:
        super().__init__()
        self.owner = owner

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.owner._dispatch(func, args, kwargs)
        return out


class HostReads:
    """Counts, per phase, the transfers of tensor values to the host and the synchronisations.

    - ``transfers[phase]``: each read of a tensor's values on the host (``.numpy()``,
      ``.item()``, ``.tolist()``, ``float()``, ``bool()``, ``np.asarray``...): ``t.cpu().numpy()``
      is one transfer. A CPU tensor counts as if it lived on a device.
    - ``syncs[phase]``: dispatched ops that make a device wait: ``_local_scalar_dense`` (what
      ``.item()`` and ``float()`` run), a copy from a device to the CPU, a blocking copy from the
      CPU to a device (it waits for the device's queue), data-dependent shapes.
    - ``where[phase]``: the calls, for the failure message.

    The training loop itself reads too (Adam reads its step counters, a GradScaler its
    ``found_inf``): :func:`cost` counts the same loop bare and watched, and charges gradprobe
    the difference.
    """

    def __init__(self) -> None:
        self.transfers: Counter[str] = Counter()
        self.syncs: Counter[str] = Counter()
        self.where: dict[str, list[str]] = {}
        self.phase = "outside"
        self._modes: contextlib.ExitStack | None = None

    def __enter__(self) -> HostReads:
        self._modes = contextlib.ExitStack()
        self._modes.enter_context(_Functions(self))
        self._modes.enter_context(_Dispatch(self))
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._modes is not None
        self._modes.close()

    @contextlib.contextmanager
    def during(self, phase: str) -> Iterator[None]:
        before, self.phase = self.phase, phase
        try:
            yield
        finally:
            self.phase = before

    def _note(self, kind: Counter[str], what: str) -> None:
        kind[self.phase] += 1
        self.where.setdefault(self.phase, []).append(what)

    def _dispatch(self, func: Any, args: tuple, kwargs: dict) -> None:
        if func is _aten._local_scalar_dense.default or func in _DATA_DEPENDENT:
            self._note(self.syncs, str(func))
            return
        if func in (_aten._to_copy.default, _aten.copy_.default):
            if func is _aten.copy_.default:
                dst, src = args[0].device, args[1]
                waits = not (args[2] if len(args) > 2 else kwargs.get("non_blocking", False))
            else:
                src = args[0]
                dst = torch.device(kwargs.get("device") or src.device)
                waits = not kwargs.get("non_blocking", False)
            if not isinstance(src, torch.Tensor):
                return
            if src.device.type != "cpu" and dst.type == "cpu":
                self._note(self.syncs, f"{func} {src.device}->cpu")
            elif src.device.type == "cpu" and dst.type != "cpu" and waits:
                self._note(self.syncs, f"{func} cpu->{dst} blocking")

    def total(self, phase: str) -> tuple[int, int]:
        return self.transfers[phase], self.syncs[phase]

    def __sub__(self, bare: HostReads) -> HostReads:
        """What this run did beyond ``bare`` (the same loop, not watched)."""
        out = HostReads()
        out.transfers, out.syncs = self.transfers - bare.transfers, self.syncs - bare.syncs
        for phase, calls in self.where.items():
            extra = Counter(calls) - Counter(bare.where.get(phase, []))
            if extra:
                out.where[phase] = sorted(extra.elements())
        return out


def test_host_reads_counts_each_way_values_reach_the_host():
    t, u = torch.randn(3), torch.randn(3)
    with HostReads() as reads:
        with reads.during("a"):
            t.cpu().numpy()  # one transfer
            t.to(torch.float64)  # a cast: none
            t.to("cpu").tolist()
            t.cpu()  # a move read by no one: none (on a device, a copy: a sync)
        with reads.during("b"):
            float(u[0])
            u.tolist()
            bool(u.sum() > 0)
            np.asarray(u.detach())
        with reads.during("c"):
            torch.nonzero(u)
            u.to("meta")  # host to device, blocking
            u.to("meta", non_blocking=True)
    assert reads.transfers["a"] == 2, reads.where
    assert reads.transfers["b"] == 4, reads.where
    assert reads.syncs["b"] == 2, reads.where  # float() and bool() run _local_scalar_dense
    assert reads.syncs["c"] == 2, reads.where


# ----------------------------------------------------------------------------- the models


def cnn_bn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 10),
    )


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 32), nn.Sigmoid(), nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 1)
    )


def _batch(model: nn.Module, device: str | torch.device = "cpu") -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    if isinstance(model[0], nn.Conv2d):
        x = torch.randn(16, 3, 6, 6, generator=g)
        y = torch.randint(0, 10, (16,), generator=g)
    else:
        x, y = torch.randn(16, 6, generator=g), torch.randn(16, 1, generator=g)
    return x.to(device), y.to(device)


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return F.cross_entropy(out, y) if y.dtype == torch.int64 else F.mse_loss(out, y)


OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.05),  # update = lr * grad (no snapshot)
    "momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),  # = lr * buffer
    "adam": lambda p: torch.optim.Adam(p, lr=1e-3),  # weights snapshot, measured after
    # gradients stay scaled under a GradScaler: grad_scale and found_inf are read from it
    "adam_fused": lambda p: torch.optim.Adam(p, lr=1e-3, fused=True),
}


def _ref_grad_norms(model: nn.Module) -> dict[tuple[str, str], float]:
    out = {}
    for path, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if p.grad is not None:
                out[(path, pname)] = float(torch.linalg.vector_norm(p.grad.cpu().double()))
    return out


def train(
    make: Any,
    opt_name: str,
    steps: int,
    *,
    watched: bool,
    device: str | torch.device = "cpu",
    scaler: bool = False,
    refs: list[dict[tuple[str, str], float]] | None = None,
    **kw: Any,
) -> tuple[HostReads, gradprobe.Monitor | None]:
    """Train ``steps`` steps under :class:`HostReads`, phases: ``hooks`` (forward + backward),
    ``step`` (the optimizer's step: gradients read, update measured, rows emitted) and ``rows``
    (the records materialised and read). ``watched``: under ``watch(reducer="torch")``;
    ``scaler``: under a GradScaler; ``refs``: gets each step's gradient norms, in float64 on
    the host (phase ``ref``)."""
    model = make().to(device)
    opt = OPTIMIZERS[opt_name](model.parameters())
    x, y = _batch(model, device)
    amp = torch.amp.GradScaler(torch.device(device).type, init_scale=2.0**10) if scaler else None
    if amp is not None:
        kw["scaler"] = amp
    kw.setdefault("every", 1)  # every step recorded (not the default budget's schedule)
    mon = gradprobe.watch(model, opt, reducer="torch", **kw) if watched else None
    with HostReads() as reads:
        for _ in range(steps):
            opt.zero_grad()
            with reads.during("hooks"):
                loss = _loss(model, x, y)
                (loss if amp is None else amp.scale(loss)).backward()
            if refs is not None:
                with reads.during("ref"):
                    if amp is not None:
                        amp.unscale_(opt)
                    refs.append(_ref_grad_norms(model))
            with reads.during("step"):
                if amp is None:
                    opt.step()
                else:
                    amp.step(opt)
                    amp.update()
        if mon is not None:
            with reads.during("rows"):
                mon.to_pandas("params")
                mon.to_pandas("layers")
    if mon is not None:
        mon.detach()
    return reads, mon


def cost(make: Any, opt_name: str, steps: int, **kw: Any) -> tuple[HostReads, gradprobe.Monitor]:
    """What watching adds to the host reads of ``steps`` training steps, and the monitor."""
    bare, _ = train(make, opt_name, steps, watched=False, **kw)
    watched, mon = train(make, opt_name, steps, watched=True, **kw)
    assert mon is not None
    return watched - bare, mon


# -------------------------------------------------------------- one transfer per recorded step

# Today a recorded step reads its layer numbers and its parameter numbers in two transfers, and
# under a GradScaler reads the scale (and a fused optimizer's found_inf) on their own. The change
# that makes it one lives in files another helper is editing (torch/_step.py: gather_layers and
# one fetch in Recorder.finish, fetch per device; torch/monitor.py: _scales returns device
# copies; torch/_hooks.py: take_compiled leaves its numbers on the device). Until it lands:


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("make", [cnn_bn, mlp], ids=["cnn_bn", "mlp"])
def test_recorded_step_moves_its_numbers_in_one_transfer_and_hooks_none(make, opt_name):
    reads, mon = cost(make, opt_name, 3, per_example=make is mlp)
    assert reads.total("hooks") == (0, 0), reads.where.get("hooks")
    assert reads.total("step") == (3, 0), reads.where.get("step")  # one per recorded step
    assert reads.total("rows") == (0, 0), reads.where.get("rows")
    frame = mon.to_pandas()
    assert sorted(frame["step"].unique()) == [0, 1, 2]
    assert frame["grad_norm"].notna().all()
    assert mon.to_pandas("layers")["backward_norm"].notna().all()


@pytest.mark.parametrize("opt_name", ["momentum", "adam_fused"])
def test_step_under_a_grad_scaler_reads_its_scale_in_the_same_transfer(opt_name):
    reads, mon = cost(cnn_bn, opt_name, 3, scaler=True)
    assert reads.total("hooks") == (0, 0), reads.where.get("hooks")
    assert reads.total("step") == (3, 0), reads.where.get("step")
    frame = mon.to_pandas()
    assert frame["grad_norm"].notna().all() and not frame["skipped"].any()


def test_steps_not_recorded_touch_no_value():
    reads, mon = cost(mlp, "sgd", 4, every=2)
    assert reads.total("hooks") == (0, 0), reads.where.get("hooks")
    assert reads.total("step") == (2, 0), reads.where.get("step")  # steps 0 and 2
    assert sorted(mon.to_pandas()["step"].unique()) == [0, 2]


# ------------------------------------------------------------------ the meta device: no data


def test_torch_reducer_keeps_every_result_on_the_device():
    """On ``meta`` any value read raises: each reduction must stay a device tensor."""
    dev = torch.device("meta")
    a = [torch.empty(5, 7, device=dev), torch.empty(3, device=dev, dtype=torch.bfloat16)]
    b = [torch.empty_like(t) for t in a]
    outs = [torch.empty(4, 8, 5, 5, device=dev) for _ in range(3)]
    red = R.TorchReducer()
    relu = Activation("relu", "rectifier", 0.0, math.inf, True)
    tanh = Activation("tanh", "saturating", -0.95, 0.95, False)
    results = [
        red.moments(a),
        red.sq_norms(a),
        red.sq_dists(a, b),
        *red.output_stats(outs, relu, 1),
        red.output_stats(outs, tanh, 1)[0],
        red.output_stats(outs[:1], None, -1)[0],
        R.norms(red, a),
        R.row_sq_norms(outs[0]),
    ]
    for r in results:
        assert isinstance(r, torch.Tensor) and r.device == dev, r
    assert red.output_now(outs[0], relu, 1) is None
    assert red.sq_norm_now(outs[0]) is None
    meter = R.UpdateMeter(red)
    assert meter.before(a).device == dev
    assert meter.after().device == dev


def test_auto_never_picks_the_c_pass_for_a_model_off_the_cpu():
    model = mlp().to("meta")
    assert isinstance(R.choose("auto", model), R.TorchReducer)
    assert isinstance(R.choose("torch", model), R.TorchReducer)
    half = mlp()
    half[2].to("meta")  # partly on a device: still torch
    assert isinstance(R.choose("auto", half), R.TorchReducer)
    if _native.available():
        assert isinstance(R.choose("auto", mlp()), R.FusedReducer)  # all on the CPU


class _NoC:
    """Stands in for the built C pass: any call is a test failure."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the C pass was called ({name}) for tensors off the CPU")


def test_fused_reducer_hands_device_tensors_to_torch_never_to_c(monkeypatch):
    """An explicit ``reducer="fused"`` on device tensors: C never reads them, and the numbers stay
    on the device (no transfer per call)."""
    monkeypatch.setattr(_native, "_fused", _NoC())
    dev = torch.device("meta")
    red = R.FusedReducer()
    a = [torch.empty(5, 7, device=dev), torch.empty(3, device=dev)]
    outs = [torch.empty(4, 6, device=dev)]
    relu = Activation("relu", "rectifier", 0.0, math.inf, True)
    for r in (
        red.moments(a),
        red.sq_norms(a),
        red.sq_dists(a, a),
        red.output_stats(outs, relu, -1)[0],
    ):
        assert isinstance(r, torch.Tensor) and r.device == dev
    assert red.output_now(outs[0], relu, -1) is None
    assert red.sq_norm_now(outs[0]) is None


def test_torch_reducer_gathers_a_call_on_several_devices_on_the_accelerator():
    """A model split across devices (or partly offloaded to the CPU): one call's tensors live on
    several devices. Their numbers are gathered on the accelerator without waiting for it (this
    raised: torch.stack of rows on two devices)."""
    a = [torch.randn(5, 7), torch.empty(3, device="meta"), torch.randn(4)]
    red = R.TorchReducer()
    with HostReads() as reads:
        results = [red.moments(a), red.sq_norms(a), red.sq_dists(a, a), R.norms(red, a)]
    for r in results:
        assert r.device.type == "meta" and r.shape[0] == 3
    assert reads.total("outside") == (0, 0), reads.where
    cpu = [a[0], a[2]]
    np.testing.assert_allclose(
        red.sq_norms(cpu).numpy(), [float(t.double().square().sum()) for t in cpu], rtol=1e-12
    )


def test_fused_reducer_keeps_a_call_mixing_cpu_and_device_tensors_on_the_device():
    """The plain CPU tensors go through C, the device ones through torch, and the numbers meet on
    the device (this copied the device part to the host: a synchronisation per call)."""
    a = [torch.randn(5, 7), torch.empty(3, device="meta"), torch.randn(4)]
    red = R.FusedReducer()
    with HostReads() as reads:
        results = [red.moments(a), red.sq_norms(a)]
    for r in results:
        assert isinstance(r, torch.Tensor) and r.device.type == "meta" and r.shape[0] == 3
    assert reads.total("outside") == (0, 0), reads.where


def test_nonfinite_counts_read_every_tensor_in_one_transfer():
    a = [torch.tensor([1.0, math.nan, math.inf]), torch.ones(4), torch.tensor([-math.inf])]
    with HostReads() as reads:
        got = R.nonfinite_counts(a)
    assert got.tolist() == [2, 0, 1] and got.dtype == np.int64
    assert reads.transfers["outside"] == 1, reads.where  # was one per tensor
    assert R.nonfinite_counts([]).shape == (0,)


def test_interleave_puts_device_and_host_rows_back_in_call_order():
    b = torch.tensor([[1.0, 1.5], [3.0, 3.5]])
    a = np.array([[0.0, 0.5], [2.0, 2.5], [4.0, 4.5]])
    got = R._interleave(b, [1, 3], a, [0, 2, 4])
    np.testing.assert_array_equal(got.numpy(), np.arange(10).reshape(5, 2) / 2)


def test_hooks_and_gradient_read_run_on_meta_without_reading_a_value():
    """Forward and backward hooks and the optimizer's pre-hook (gradients reduced, weights
    snapshot) on a model with no data: a single ``.item()`` or ``.cpu()`` would raise."""
    model = cnn_bn().to("meta")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    mon = gradprobe.watch(model, opt, reducer="torch")
    assert isinstance(mon.reducer, R.TorchReducer)
    x = torch.empty(16, 3, 6, 6, device="meta")
    y = torch.zeros(16, dtype=torch.int64, device="meta")
    F.cross_entropy(model(x), y).backward()
    mon.before_update(opt)  # what the optimizer's pre-hook does
    reading = mon._reading
    assert reading is not None and reading.g is not None and reading.w is not None
    assert reading.g.device.type == "meta" and reading.w.device.type == "meta"
    mon._reading = None
    mon.detach()


# ------------------------------------------------------------------------------- on a GPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("opt_name", ["momentum", "adam"])
def test_cuda_cnn_bn_grad_norms_match_float64_in_one_transfer_per_step(opt_name):
    dev = torch.device("cuda")
    assert isinstance(R.choose("auto", cnn_bn().to(dev)), R.TorchReducer)
    refs: list[dict[tuple[str, str], float]] = []
    bare, _ = train(cnn_bn, opt_name, 3, watched=False, device=dev)
    watched, mon = train(cnn_bn, opt_name, 3, watched=True, device=dev, refs=refs)
    torch.cuda.synchronize()
    assert mon is not None
    reads = watched - bare
    assert reads.total("hooks") == (0, 0), reads.where.get("hooks")
    assert reads.transfers["step"] == 3, reads.where.get("step")
    assert reads.syncs["step"] == 3, reads.where.get("step")  # each the one copy to the host
    assert reads.total("rows") == (0, 0), reads.where.get("rows")
    frame = mon.to_pandas().set_index(["step", "layer", "param"])
    for step, ref in enumerate(refs):
        for (layer, pname), v in ref.items():
            got = float(frame.loc[(step, layer, pname), "grad_norm"])
            assert math.isclose(got, v, rel_tol=1e-6, abs_tol=1e-12), (step, layer, pname)
    layers = mon.to_pandas("layers")
    assert layers["backward_norm"].notna().all() and layers["act_rms"].notna().all()


class _Split(nn.Module):
    """A model split across the CPU and a GPU (offloading, or a naive model-parallel net)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(6, 32)
        self.b = nn.Linear(32, 1).cuda()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x.cpu())).cuda())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_model_split_across_cpu_and_cuda_records_every_layer():
    model = _Split()
    assert isinstance(R.choose("auto", model), R.TorchReducer)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    mon = gradprobe.watch(model, opt, every=1)
    x, y = torch.randn(16, 6), torch.randn(16, 1, device="cuda")
    refs = []
    for _ in range(2):
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        refs.append(_ref_grad_norms(model))
        opt.step()
    frame = mon.to_pandas().set_index(["step", "layer", "param"])
    for step, ref in enumerate(refs):
        for (layer, pname), v in ref.items():
            got = float(frame.loc[(step, layer, pname), "grad_norm"])
            assert math.isclose(got, v, rel_tol=1e-6), (step, layer, pname)
    assert set(mon.to_pandas("layers")["layer"]) == {"a", "b"}
    mon.detach()
