"""The monitor on real training stacks: closures, evaluation loops, AMP loss scaling, low-precision
weights, parameters that join later, storage, structure. Each test names what broke."""

from __future__ import annotations

import copy
import gc
import math
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from monitor_reference import act_stats
from torch import nn

import gradprobe
from gradprobe.torch import _native

REDUCERS = ["fused", "torch"] if _native._fused is not None else ["torch"]


def mlp(d_in: int = 6, width: int = 16) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(d_in, width), nn.Tanh(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1)
    )


def names(model: nn.Module) -> dict[torch.Tensor, tuple[str, str]]:
    out = {}
    for path, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            out[p] = (path or "(root)", pname)
    return out


def grad_norms(model: nn.Module, scale: float = 1.0) -> dict[tuple[str, str], float]:
    return {
        key: float(p.grad.double().norm()) / scale
        for p, key in names(model).items()
        if p.grad is not None
    }


def assert_norms(frame: pd.DataFrame, step: int, want: dict[tuple[str, str], float]) -> None:
    rows = frame[frame["step"] == step].set_index(["layer", "param"])["grad_norm"]
    assert set(rows.index) == set(want), (step, set(rows.index), set(want))
    for key, v in want.items():
        assert abs(float(rows[key]) - v) <= 1e-12 * max(v, 1e-300), (step, key, rows[key], v)


# ------------------------------------------------------------------ a) closures
@pytest.mark.parametrize("reducer", REDUCERS)
def test_step_with_closure_records_the_gradients_that_step_applies_from_step_0(reducer):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    mon = gradprobe.watch(model, opt, every=1, reducer=reducer)
    taken = []
    for _ in range(4):
        x, y = torch.randn(16, 6), torch.randn(16, 1)

        def closure(x=x, y=y):  # type: ignore[no-untyped-def]
            opt.zero_grad()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            taken.append(grad_norms(model))
            return loss

        opt.step(closure)
    frame = mon.to_pandas()
    mon.detach()
    assert sorted(frame["step"].unique()) == [0, 1, 2, 3]
    for s in range(4):
        assert_norms(frame, s, taken[s])
    layers = mon.to_pandas("layers")
    assert sorted(layers["step"].unique()) == [0, 1, 2, 3]


def test_lbfgs_records_the_first_closure_calls_gradients_and_the_real_update():
    model = mlp()
    opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=4)
    mon = gradprobe.watch(model, opt)
    first, changes = [], []
    for _ in range(3):
        x, y = torch.randn(16, 6), torch.randn(16, 1)
        calls = []

        def closure(x=x, y=y, calls=calls):  # type: ignore[no-untyped-def]
            opt.zero_grad()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            if not calls:
                first.append(grad_norms(model))
            calls.append(1)
            return loss

        before = {k: p.detach().double().clone() for p, k in names(model).items()}
        opt.step(closure)
        assert len(calls) > 1  # LBFGS evaluated the closure several times
        changes.append(
            {k: float((p.detach().double() - before[k]).norm()) for p, k in names(model).items()}
        )
    frame = mon.to_pandas()
    mon.detach()
    for s in range(3):
        assert_norms(frame, s, first[s])
        got = frame[frame["step"] == s].set_index(["layer", "param"])["update_norm"]
        for k, v in changes[s].items():
            assert got[k] == pytest.approx(v, rel=1e-9)
    # the layer rows come from the first call's forward and backward only
    layers = mon.to_pandas("layers")
    assert len(layers[layers["step"] == 0]) == 3


def test_a_step_whose_closure_raises_leaves_nothing_for_the_next_step():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = gradprobe.watch(model, opt)
    x = torch.randn(16, 6)

    def closure():  # type: ignore[no-untyped-def]
        opt.zero_grad()
        model(x * 100).sum().backward()
        raise RuntimeError("closure failed after backward")

    with pytest.raises(RuntimeError, match="closure failed"):
        opt.step(closure)  # the gradients were read, then the step died
    opt.zero_grad()
    model(x).pow(2).mean().backward()
    want = grad_norms(model)
    opt.step()
    frame = mon.to_pandas()
    mon.detach()
    assert_norms(frame, 0, want)


# ----------------------------------------------------------- b) training steps only
class Keeper(nn.Module):
    """Linear layers whose outputs are watched by weak references."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.a = nn.Linear(6, 32)
        self.b = nn.Linear(32, 1)
        self.refs: list[weakref.ref] = []

    def forward(self, x):  # type: ignore[no-untyped-def]
        h = self.a(x)
        self.refs.append(weakref.ref(h))
        return self.b(torch.tanh(h))


@pytest.mark.parametrize("reducer", REDUCERS)
def test_validation_batches_under_no_grad_keep_nothing_and_change_nothing(reducer):
    model = Keeper()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradprobe.watch(model, opt, reducer=reducer)
    x = torch.randn(8, 6)
    with torch.no_grad():
        for _ in range(2000):
            model(torch.randn(8, 6) * 10)  # validation: other data, no step
    with torch.inference_mode():
        model(torch.randn(8, 6) * 10)
    gc.collect()
    assert all(r() is None for r in model.refs)  # nothing held
    ref = copy.deepcopy(model)
    opt.zero_grad()
    model(x).sum().backward()
    opt.step()
    with torch.no_grad():
        want = act_stats([torch.tanh(ref.a(x))], "tanh")
    layers = mon.to_pandas("layers").set_index(["step", "layer"])
    mon.detach()
    assert layers.index.get_level_values("step").unique().tolist() == [0]
    assert float(layers.loc[(0, "a"), "act_rms"]) == pytest.approx(want["act_rms"], rel=1e-6)


@pytest.mark.parametrize("reducer", REDUCERS)
def test_forwards_with_no_backward_are_dropped_but_accumulated_micro_batches_count(reducer):
    model = Keeper()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradprobe.watch(model, opt, reducer=reducer)
    ref = copy.deepcopy(model)
    batches = [torch.randn(8, 6) for _ in range(2)]
    for xb in batches:
        model(torch.randn(8, 6) * 10)  # grad enabled, no backward: an evaluation forward
        model(xb).sum().backward()  # a micro-batch of the step
    model(torch.randn(8, 6) * 10)  # evaluation right before the step
    opt.step()
    with torch.no_grad():
        want = act_stats([torch.tanh(ref.a(xb)) for xb in batches], "tanh")
    layers = mon.to_pandas("layers").set_index("layer")
    mon.detach()
    assert float(layers.loc["a", "act_rms"]) == pytest.approx(want["act_rms"], rel=1e-6)
    assert float(layers.loc["a", "act_mean"]) == pytest.approx(want["act_mean"], rel=1e-6)


# ------------------------------------------------------------------ c) GradScaler
def _amp_step(model, opt, scaler, x, poison: bool = False) -> float:  # type: ignore[no-untyped-def]
    opt.zero_grad()
    loss = model(x).pow(2).mean()
    if poison:
        loss = loss * float("inf")
    scaler.scale(loss).backward()
    scale = float(scaler.get_scale())
    scaler.step(opt)
    scaler.update()
    return scale


def test_fused_adam_with_grad_scaler_records_unscaled_gradients_and_skipped_steps():
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=65536.0)
    mon = gradprobe.watch(model, opt, every=1)
    x = torch.randn(8, 6)
    want = []
    for _ in range(3):
        opt.zero_grad()
        scaler.scale(model(x).pow(2).mean()).backward()
        want.append(grad_norms(model, scale=float(scaler.get_scale())))
        scaler.step(opt)
        scaler.update()
    _amp_step(model, opt, scaler, x, poison=True)  # step 3: the scaler finds inf
    frame = mon.to_pandas()
    mon.detach()
    for s in range(3):
        assert_norms(frame, s, want[s])
    skipped = frame[frame["step"] == 3]
    assert len(skipped) == 6 and skipped["skipped"].all()
    assert not frame[frame["step"] < 3]["skipped"].any()
    assert not np.isinf(skipped["grad_norm"]).any() and (skipped["grad_nonfinite"] == 0).all()


def test_skipped_grad_scaler_steps_are_flagged_and_backward_norm_is_unscaled():
    model = mlp()
    ref = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    mon = gradprobe.watch(model, opt, scaler=scaler)
    x = torch.randn(8, 6)
    _amp_step(model, opt, scaler, x)
    _amp_step(model, opt, scaler, x, poison=True)  # skipped: opt.step never runs
    _amp_step(model, opt, scaler, x)
    params, layers = mon.to_pandas(), mon.to_pandas("layers")
    mon.detach()
    assert sorted(params["step"].unique()) == [0, 1, 2]
    assert params.groupby("step")["skipped"].all().tolist() == [False, True, False]
    assert layers.groupby("step")["skipped"].all().tolist() == [False, True, False]
    bad = params[params["step"] == 1]
    assert not np.isinf(bad["grad_norm"]).any() and (bad["grad_nonfinite"] == 0).all()
    assert not np.isinf(layers[layers["step"] == 1]["backward_norm"]).any()
    # dL/dh of the last layer, unscaled: d(mean(out^2))/d out = 2 out / n
    with torch.no_grad():
        out = ref(x)
    want = float((2 * out / out.numel()).double().norm())
    got = layers[(layers["step"] == 0) & (layers["layer"] == "4")]["backward_norm"]
    assert float(got.iloc[0]) == pytest.approx(want, rel=1e-5)


def test_a_step_the_scaler_skips_unseen_leaves_nothing_in_the_next_step():
    # without scaler=..., a skipped step is not seen; its forward must still not be merged
    # into the next recorded step (the gradients were zeroed in between)
    model = Keeper()
    ref = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    mon = gradprobe.watch(model, opt)
    x = torch.randn(8, 6)
    _amp_step(model, opt, scaler, x * 10, poison=True)  # skipped: opt.step never runs
    _amp_step(model, opt, scaler, x)
    layers = mon.to_pandas("layers").set_index("layer")
    mon.detach()
    with torch.no_grad():
        want = act_stats([torch.tanh(ref.a(x))], "tanh")
    assert float(layers.loc["a", "act_rms"]) == pytest.approx(want["act_rms"], rel=1e-6)


# --------------------------------------------------------- d) low-precision weights
def test_bf16_sgd_update_norm_is_the_real_change_of_the_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1)).to(torch.bfloat16)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    mon = gradprobe.watch(model, opt)
    model(torch.randn(32, 64, dtype=torch.bfloat16)).float().pow(2).mean().backward()
    before = {k: p.detach().double().clone() for p, k in names(model).items()}
    opt.step()
    real = {k: float((p.detach().double() - before[k]).norm()) for p, k in names(model).items()}
    w = model[0].weight.detach().double()
    assert float((w == before[("0", "weight")]).double().mean()) > 0.5  # rounding kept most
    got = mon.to_pandas().set_index(["layer", "param"])["update_norm"]
    mon.detach()
    for k, v in real.items():
        assert float(got[k]) == pytest.approx(v, rel=1e-6, abs=1e-12), k


# ---------------------------------------------------- e) parameters that join later
def test_parameters_unfrozen_after_watch_are_recorded_from_then_on():
    model = mlp()
    model[0].requires_grad_(False)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradprobe.watch(model, opt, every=1)
    for s in range(4):
        if s == 2:
            model[0].requires_grad_(True)
        opt.zero_grad()
        model(torch.randn(8, 6)).pow(2).mean().backward()
        opt.step()
    frame = mon.to_pandas()
    mon.detach()
    steps = sorted(frame.loc[frame["layer"] == "0", "step"].unique())
    assert steps == [2, 3]


def test_param_groups_added_later_are_recorded_from_then_on():
    model = mlp()
    opt = torch.optim.Adam(model[2:].parameters(), lr=0.01)
    model[0].requires_grad_(False)
    mon = gradprobe.watch(model, opt)
    for s in range(3):
        if s == 1:
            model[0].requires_grad_(True)
            opt.add_param_group({"params": model[0].parameters(), "lr": 0.001})
        opt.zero_grad()
        model(torch.randn(8, 6)).pow(2).mean().backward()
        want = grad_norms(model)
        opt.step()
        assert_norms(mon.to_pandas(), s, want)
    mon.detach()


# ------------------------------------------------------------------- f) storage
def _train(model, opt, steps: int) -> None:  # type: ignore[no-untyped-def]
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(8, 6)).pow(2).mean().backward()
        opt.step()


def _on_disk(folder: Path, table: str = "params") -> int:
    return sum(len(pd.read_parquet(p)) for p in folder.glob(f"{table}-*.parquet"))


def test_detach_writes_every_row_to_log_dir(tmp_path):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradprobe.watch(model, opt, every=1, log_dir=tmp_path)
    _train(model, opt, 5)
    mon.detach()
    assert _on_disk(tmp_path) == 5 * 6
    assert _on_disk(tmp_path, "layers") == 5 * 3


def test_leaving_the_with_block_by_an_exception_writes_every_row(tmp_path):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with (
        pytest.raises(RuntimeError, match="training failed"),
        gradprobe.watch(model, opt, every=1, log_dir=tmp_path),
    ):
        _train(model, opt, 4)
        raise RuntimeError("training failed")
    assert _on_disk(tmp_path) == 4 * 6


@pytest.mark.parametrize("all_ranks", [False, True])
def test_only_rank_0_writes_unless_all_ranks(tmp_path, monkeypatch, all_ranks):
    from gradprobe.torch import monitor

    monkeypatch.setattr(monitor, "_rank", lambda: 1)  # as under torch.distributed, rank 1
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradprobe.watch(model, opt, log_dir=tmp_path, all_ranks=all_ranks)
    _train(model, opt, 3)
    mon.detach()
    assert len(mon.to_pandas()) == 3 * 6  # readable on every rank
    assert _on_disk(tmp_path) == (3 * 6 if all_ranks else 0)
    if all_ranks:
        frame = pd.concat(pd.read_parquet(p) for p in tmp_path.glob("params-*.parquet"))
        assert (frame["rank"] == 1).all()


@pytest.mark.slow
def test_rows_reach_disk_at_interpreter_exit(tmp_path):
    script = textwrap.dedent(
        f"""
        import torch, gradprobe
        model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        mon = gradprobe.watch(model, opt, every=1, log_dir={str(tmp_path)!r})
        for _ in range(7):
            opt.zero_grad()
            model(torch.randn(5, 3)).sum().backward()
            opt.step()
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    assert _on_disk(tmp_path) == 7 * 4


def test_a_monitor_no_longer_referenced_can_be_garbage_collected(tmp_path):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradprobe.watch(model, opt, log_dir=tmp_path)
    _train(model, opt, 2)
    mon.detach()
    ref = weakref.ref(mon)
    del mon
    gc.collect()
    assert ref() is None


# ------------------------------------------------------------------ g) structure
class Seq(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.lstm = nn.LSTM(5, 8, batch_first=True)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 1)

    def forward(self, x):  # type: ignore[no-untyped-def]
        h, _ = self.lstm(x)
        a, _ = self.attn(h, h, h)
        return self.head(a)


def test_modules_with_tuple_outputs_get_layer_rows_and_nested_layers_a_depth_before_the_head():
    model = Seq()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradprobe.watch(model, opt)
    x = torch.randn(4, 7, 5)
    with torch.no_grad():
        h, _ = model.lstm(x)
    model(x).pow(2).mean().backward()
    opt.step()
    layers = mon.to_pandas("layers").set_index("layer")
    depth = mon.to_pandas().groupby("layer")["depth"].first()
    mon.detach()
    assert {"lstm", "attn", "head"} <= set(layers.index)
    assert float(layers.loc["lstm", "act_rms"]) == pytest.approx(
        float(h.double().square().mean().sqrt()), rel=1e-5
    )
    assert depth["lstm"] < depth["attn.out_proj"] < depth["head"]
    assert depth["attn"] < depth["head"]


class NewGELUActivation(nn.Module):
    """Hugging Face's gelu_new (GPT-2), written as HF writes it: a tanh inside."""

    def forward(self, x):  # type: ignore[no-untyped-def]
        c = math.sqrt(2.0 / math.pi)
        return 0.5 * x * (1.0 + torch.tanh(c * (x + 0.044715 * torch.pow(x, 3.0))))


class Conv1D(nn.Module):
    """Hugging Face's Conv1D: a linear layer (units on the last dimension)."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.5)
        self.bias = nn.Parameter(torch.full((nf,), -0.4))

    def forward(self, x):  # type: ignore[no-untyped-def]
        return x @ self.weight + self.bias


class HFBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.fc = Conv1D(12, 6)
        self.act = NewGELUActivation()
        self.proj = Conv1D(8, 12)
        self.relu = nn.ReLU()
        self.head = nn.Linear(8, 1)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.head(self.relu(self.proj(self.act(self.fc(x)))))


def test_hf_gelu_new_is_named_gelu_and_hf_conv1d_counts_dead_units_per_feature():
    model = HFBlock()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradprobe.watch(model, opt)
    x = torch.randn(4, 10, 6)  # (batch, positions, features)
    with torch.no_grad():
        g = model.act(model.fc(x))
        r = model.relu(model.proj(g))
    model(x).pow(2).mean().backward()
    opt.step()
    layers = mon.to_pandas("layers").set_index("layer")
    mon.detach()
    assert layers.loc["fc", "activation"].startswith("gelu")  # never the tanh inside it
    assert math.isnan(float(layers.loc["fc", "saturated_frac"]))
    assert float(layers.loc["fc", "act_mean"]) == pytest.approx(float(g.double().mean()), rel=1e-5)
    want = act_stats([r], "relu", unit_dim=-1)["dead_frac"]  # units are the last dimension
    assert float(layers.loc["proj", "dead_frac"]) == pytest.approx(want)


# --------------------------------------------------------------- i) zero gradients
@pytest.mark.parametrize("reducer", REDUCERS)
def test_all_zero_gradients_give_finite_rows(reducer):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradprobe.watch(model, opt, reducer=reducer)
    (model(torch.randn(8, 6)).sum() * 0).backward()
    opt.step()
    frame = mon.to_pandas()
    mon.detach()
    assert (frame["grad_norm"] == 0).all()
    assert (frame["grad_nonfinite"] == 0).all()
    assert not np.isinf(frame[["grad_norm", "grad_std", "weight_norm", "update_norm"]]).any().any()
    assert math.isfinite(float(frame["update_ratio"].max()))


# ------------------------------------------------------------ h) C sees plain tensors only
class Wrapped(torch.Tensor):
    """A tensor subclass (as DTensor is): its memory is not for the C pass to read."""


def test_the_fused_reducer_never_hands_c_a_tensor_that_is_not_plain_dense_cpu(monkeypatch):
    from gradprobe.torch import _reduce

    calls = []
    real = _native.moments

    def spy(ts):  # type: ignore[no-untyped-def]
        got = real(ts)
        calls.append((list(ts), got))
        return got

    monkeypatch.setattr(_native, "moments", spy)
    plain = torch.randn(5, 3)
    sub = torch.randn(4).as_subclass(Wrapped)
    sparse = torch.randn(3, 3).to_sparse()
    got = np.asarray(_reduce.FusedReducer().moments([plain, sub, sparse, plain.t()]))
    for ts, res in calls:  # C ran only on calls made of plain dense CPU tensors
        if res is not None:
            assert all(type(t) is torch.Tensor and t.layout is torch.strided for t in ts)
    assert any(res is not None for _, res in calls)  # the plain ones did go through C
    want = [float(t.to_dense().double().square().sum()) for t in (plain, sub, sparse, plain)]
    np.testing.assert_allclose(got[:, 1], want, rtol=1e-12)


@pytest.mark.parametrize("reducer", REDUCERS)
def test_sparse_embedding_gradients_are_recorded_exactly(reducer):
    torch.manual_seed(5)
    model = nn.Sequential(nn.Embedding(50, 8, sparse=True), nn.Flatten(), nn.Linear(24, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = gradprobe.watch(model, opt, reducer=reducer)
    model(torch.randint(0, 50, (4, 3))).pow(2).mean().backward()
    assert model[0].weight.grad.layout is not torch.strided
    # the gradient the step applies: duplicate indices summed in float32, as SGD does
    want = {k: float(p.grad.to_dense().double().norm()) for p, k in names(model).items()}
    opt.step()
    frame = mon.to_pandas()
    mon.detach()
    assert_norms(frame, 0, want)
    row = frame.set_index(["layer", "param"]).loc[("0", "weight")]
    assert float(row["grad_zero_frac"]) >= 1 - 12 / 50  # rows never looked up: zeros


@pytest.mark.parametrize("reducer", REDUCERS)
@pytest.mark.parametrize("size", [1e-24, 1e22])
def test_tiny_and_huge_gradients_and_backward_signals_are_exact(reducer, size):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    mon = gradprobe.watch(model, opt, reducer=reducer)
    x = torch.randn(8, 6)
    (model(x).sum() * size).backward()
    want = grad_norms(model)
    opt.step()
    frame, layers = mon.to_pandas(), mon.to_pandas("layers").set_index("layer")
    mon.detach()
    assert_norms(frame, 0, want)
    # dL/dh of the last layer is `size` for each of its 8 outputs
    assert float(layers.loc["4", "backward_norm"]) == pytest.approx(size * math.sqrt(8), rel=1e-6)
