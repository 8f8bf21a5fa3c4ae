"""Hooks come and go cleanly, the model is untouched, memory stays bounded, bad input is clear."""

from __future__ import annotations

import copy
import tracemalloc

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradprobe
from gradprobe.errors import CaptureError, GradprobeWarning, UsageError


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.Sigmoid(), nn.Linear(16, 1)
    )


def hook_count(model: nn.Module, opt: torch.optim.Optimizer | None = None) -> int:
    n = 0
    for m in model.modules():
        n += len(m._forward_hooks) + len(m._forward_pre_hooks)
        n += len(m._backward_hooks) + len(m._backward_pre_hooks)
    if opt is not None:
        n += len(opt._optimizer_step_pre_hooks) + len(opt._optimizer_step_post_hooks)
    return n


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: int, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = torch.randn(32, 4, generator=g), torch.randn(32, 1, generator=g)
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        opt.step()


def test_detach_removes_every_hook_and_context_manager_detaches():
    model = mlp()
    opt = torch.optim.Adam(model.parameters())
    assert hook_count(model, opt) == 0
    with gradprobe.watch(model, opt) as mon:
        train(model, opt, 2)
        assert hook_count(model, opt) > 0
    assert hook_count(model, opt) == 0
    assert not mon.attached
    assert len(mon.to_pandas()) == 2 * 6  # records stay readable after detach
    mon.detach()  # idempotent


def test_watched_training_is_bit_for_bit_the_same_as_bare_training():
    bare, watched = mlp(), mlp()
    bare_opt = torch.optim.Adam(bare.parameters(), lr=1e-2)
    opt = torch.optim.Adam(watched.parameters(), lr=1e-2)
    mon = gradprobe.watch(watched, opt, per_example=True)
    train(bare, bare_opt, 5)
    train(watched, opt, 5)
    mon.detach()
    train(bare, bare_opt, 3, seed=1)
    train(watched, opt, 3, seed=1)
    for a, b in zip(bare.parameters(), watched.parameters(), strict=True):
        assert torch.equal(a, b)


def test_every_n_records_only_those_steps_and_leaves_other_steps_untouched():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradprobe.watch(model, opt, every=3)
    counts = []
    for _ in range(7):
        counts.append(sum(len(m._forward_hooks) for m in model.modules()))
        train(model, opt, 1)
    assert sorted(mon.to_pandas()["step"].unique()) == [0, 3, 6]
    assert sorted(mon.to_pandas("layers")["step"].unique()) == [0, 3, 6]
    assert [c > 0 for c in counts] == [True, False, False, True, False, False, True]
    mon.detach()


def test_hooks_parked_between_recorded_steps_come_back_after_the_users_and_go_on_detach():
    """Unrecorded steps take the hooks out of the modules' dicts (the modules' fast path) and
    the next recorded step puts the same ones back, after a hook the user added meanwhile;
    detach leaves nothing behind, also in the always-called dicts."""
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradprobe.watch(model, opt, every=2)
    train(model, opt, 1)  # step 0 recorded; step 1 is not: parked
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0
    seen: list[str] = []
    model[0].register_forward_hook(lambda m, i, o: seen.append("user"))
    user = dict(model[0]._forward_hooks)
    train(model, opt, 1)  # step 1: nothing of ours runs; at its end ours come back for step 2
    assert seen == ["user"]
    hooks = list(model[0]._forward_hooks)
    assert len(hooks) == 2 and hooks[0] in user  # after the user's
    ours = model[0]._forward_hooks[hooks[1]]
    train(model, opt, 2)  # step 2, recorded; step 3 not; at its end armed for step 4
    assert list(model[0]._forward_hooks) == hooks
    assert model[0]._forward_hooks[hooks[1]] is ours  # the same hook, not made again
    layers = mon.to_pandas("layers")
    assert sorted(layers["step"].unique()) == [0, 2]
    assert not layers[layers["step"] == 2][["act_rms", "backward_norm"]].isna().any().any()
    mon.detach()
    assert dict(model[0]._forward_hooks) == user  # only the user's hook is left
    for m in model.modules():
        if m is not model[0]:
            assert not m._forward_hooks and not m._forward_pre_hooks
        assert set(m._forward_hooks_always_called) <= set(m._forward_hooks)


def test_memory_stays_bounded_over_thousands_of_steps(tmp_path):
    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    mon = gradprobe.watch(model, opt, every=1, log_dir=tmp_path)
    mon._buffers["params"].max_rows = 2000  # flush often
    mon._buffers["layers"].max_rows = 1000
    x, y = torch.randn(8, 2), torch.randn(8, 1)

    def steps(n: int) -> None:
        for _ in range(n):
            opt.zero_grad()
            F.mse_loss(model(x), y).backward()
            opt.step()

    steps(500)
    tracemalloc.start()
    steps(1500)
    first, _ = tracemalloc.get_traced_memory()
    steps(3000)
    second, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert second - first < 1_000_000, (first, second)
    mon.detach()
    mon.flush()
    frame = mon.to_pandas()
    assert len(frame) == 5000 * 4 and frame["step"].max() == 4999
    assert len(list(tmp_path.glob("params-*.parquet"))) >= 9


def test_bad_input_gives_clear_errors():
    model = mlp()
    with pytest.raises(CaptureError, match="instantiate"):
        gradprobe.watch(nn.Linear)  # type: ignore[arg-type]
    with pytest.raises(CaptureError, match="torch.nn.Module"):
        gradprobe.watch("model")  # type: ignore[arg-type]
    with pytest.raises(CaptureError, match="Optimizer"):
        gradprobe.watch(model, "adam")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="every"):
        gradprobe.watch(model, every=0)
    frozen = mlp().requires_grad_(False)
    with pytest.raises(CaptureError, match="no trainable parameters"):
        gradprobe.watch(frozen)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = gradprobe.watch(model, opt)
    with pytest.raises(UsageError, match="monitor.step"):
        mon.step()
    with pytest.raises(UsageError, match="params, layers"):
        mon.to_pandas("nope")
    mon.detach()


def test_step_without_backward_warns_once():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = gradprobe.watch(model, opt)
    with pytest.warns(GradprobeWarning, match="no parameter has a gradient"):
        opt.step()
    mon.detach()


def test_a_model_that_raises_in_forward_leaves_no_mode_behind():
    class Boom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def forward(self, x):  # type: ignore[no-untyped-def]
            F.relu(self.lin(x))
            raise RuntimeError("boom")

    model = Boom()
    mon = gradprobe.watch(model)
    with pytest.raises(RuntimeError, match="boom"):
        model(torch.randn(1, 2))
    assert mon._capture._mode is None
    assert torch.relu(torch.tensor([-1.0])).item() == 0.0
    mon.detach()
    assert hook_count(model) == 0
    _ = copy.deepcopy(model)


def test_a_scaler_that_is_not_a_grad_scaler_is_a_clear_usage_error():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(UsageError, match="scaler must be a torch.amp.GradScaler.*got int"):
        gradprobe.watch(model, opt, scaler=3)
    assert hook_count(model, opt) == 0


@pytest.mark.parametrize("where", ["_slab_rows", "_param_rows", "_layer_rows"])
def test_a_ctrl_c_while_pending_rows_become_rows_loses_no_recorded_step(ctrl_c_in, where):
    """The CLI's Ctrl-C test once lost 62 recorded steps: the interrupt landed after the
    monitor's pending steps were taken out, before they were rows."""
    from gradprobe.torch._rows import PendingRows

    hits = ctrl_c_in(PendingRows, where)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradprobe.watch(model, opt, every=1, per_example=where != "_slab_rows")
    last = -1
    with pytest.raises(KeyboardInterrupt):
        for step in range(200):
            train(model, opt, 1, seed=step)
            last = step
    mon.detach()
    assert hits, f"PendingRows.{where} never ran"
    params = mon.to_pandas("params")
    # the interrupted step itself was recorded before its rows were made
    assert sorted(set(params["step"])) == list(range(last + 2))
    if where == "_layer_rows":
        assert sorted(set(mon.to_pandas("layers")["step"])) == list(range(last + 2))
