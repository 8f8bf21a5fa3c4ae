"""Every statistic of the monitor against a slow, obvious reference, on several small problems."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monitor_reference import Recorder, act_stats, grad_stats
from torch import nn

import gradprobe
from gradprobe.torch import _native

RTOL = 1e-5


def close(a: float, b: float, rtol: float = RTOL, atol: float = 1e-12) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= atol + rtol * abs(b)


def assert_grad_rows(frame, model: nn.Module, step: int) -> None:
    rows = frame[frame["step"] == step].set_index(["layer", "param"])
    named = {}
    for path, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if p.requires_grad and p.grad is not None:
                named[(path or "(root)", pname)] = p.grad
    assert set(rows.index) == set(named), (set(rows.index), set(named))
    for key, g in named.items():
        ref = grad_stats(g)
        for col, v in ref.items():
            got = float(rows.loc[key, col])
            assert close(got, v, atol=1e-9), (key, col, got, v)


@pytest.fixture(params=["fused", "torch"])
def reduce_path(request):
    """Run each test through every reducer, chosen at watch(..., reducer=...): the fused C pass
    (plain CPU tensors, when built) and torch (accelerators, tensor subclasses)."""
    if request.param == "fused" and not _native.available():
        pytest.fail("gradprobe._fused is not built: reinstall with a C compiler (pip install -e .)")
    return request.param


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 16),
        nn.Sigmoid(),
        nn.Linear(16, 16),
        nn.Tanh(),
        nn.Linear(16, 16),
        nn.ReLU(),
        nn.Linear(16, 1),
    )


def test_mlp_grad_update_and_activation_stats_match_reference(reduce_path):
    model = mlp()
    ref_model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.randn(64, 6), torch.randn(64, 1)
    mon = gradprobe.watch(model, opt, reducer=reduce_path)
    acts = {"1": "sigmoid", "3": "tanh", "5": "relu"}
    for step in range(3):
        rec = Recorder({k: ref_model[int(k)] for k in ["0", "2", "4", "6", *acts]})
        for m, o in ((model, opt), (ref_model, ref_opt)):
            o.zero_grad()
            F.mse_loss(m(x), y).backward()
        before = [p.detach().clone() for p in ref_model.parameters()]
        opt.step()
        frame = mon.to_pandas()
        assert_grad_rows(frame, ref_model, step)
        ref_opt.step()
        rows = frame[frame["step"] == step].reset_index(drop=True)
        for i, (p, b) in enumerate(zip(ref_model.parameters(), before, strict=True)):
            assert close(rows.loc[i, "weight_norm"], float(b.double().norm()))
            upd = float((p.detach().double() - b.double()).norm())
            assert close(rows.loc[i, "update_norm"], upd, rtol=1e-4)
            assert close(rows.loc[i, "update_ratio"], upd / float(b.double().norm()), rtol=1e-4)
        layers = mon.to_pandas("layers")
        layers = layers[layers["step"] == step].set_index("layer")
        for lin, act in (("0", "1"), ("2", "3"), ("4", "5")):
            ref = act_stats(rec.outputs[act], acts[act])
            assert layers.loc[lin, "activation"] == acts[act]
            for col, v in ref.items():
                assert close(float(layers.loc[lin, col]), v, rtol=1e-5), (lin, col)
            assert close(float(layers.loc[lin, "backward_norm"]), rec.backward_norm(lin), 1e-5)
        out_ref = act_stats(rec.outputs["6"], "linear")
        assert layers.loc["6", "activation"] == ""
        assert close(float(layers.loc["6", "act_rms"]), out_ref["act_rms"], 1e-5)
        rec.remove()
    mon.detach()
    assert list(mon.to_pandas()["depth"].unique()) == [0, 1, 2, 3]


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):  # type: ignore[no-untyped-def]
        x = F.relu(self.conv1(x))  # functional activations count too
        x = torch.tanh(self.conv2(x))
        return self.head(x.flatten(1))


def test_small_cnn_with_functional_activations(reduce_path):
    torch.manual_seed(1)
    model = SmallCNN()
    with torch.no_grad():
        model.conv1.bias.fill_(-0.3)  # some dead channels
    x, y = torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,))
    mon = gradprobe.watch(model, reducer=reduce_path)
    rec_model = copy.deepcopy(model)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    mon.step()
    rec = Recorder({"conv1": rec_model.conv1, "conv2": rec_model.conv2})
    F.cross_entropy(rec_model(x), y).backward()
    assert_grad_rows(mon.to_pandas(), rec_model, 0)
    layers = mon.to_pandas("layers").set_index("layer")
    assert layers.loc["conv1", "activation"] == "relu"
    assert layers.loc["conv2", "activation"] == "tanh"
    relu_ref = act_stats([F.relu(o) for o in rec.outputs["conv1"]], "relu", unit_dim=1)
    tanh_ref = act_stats([torch.tanh(o) for o in rec.outputs["conv2"]], "tanh")
    for col in ("act_mean", "act_rms", "dead_frac"):
        assert close(float(layers.loc["conv1", col]), relu_ref[col], 1e-5), col
    for col in ("act_mean", "act_std", "saturated_frac"):
        assert close(float(layers.loc["conv2", col]), tanh_ref[col], 1e-5), col
    assert close(float(layers.loc["conv1", "backward_norm"]), rec.backward_norm("conv1"), 1e-5)
    assert list(layers.sort_values("depth").index) == ["conv1", "conv2", "head"]
    mon.detach()


class UnusedAndFrozen(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.frozen = nn.Linear(4, 8)
        self.frozen.requires_grad_(False)
        self.used = nn.Linear(8, 1)
        self.unused = nn.Linear(8, 8)
        self.scale = nn.Parameter(torch.tensor(2.0))  # owned by the root module

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.used(torch.sigmoid(self.frozen(x))) * self.scale


def test_unused_frozen_and_root_parameters(reduce_path):
    torch.manual_seed(2)
    model = UnusedAndFrozen()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    mon = gradprobe.watch(model, opt, reducer=reduce_path)
    x = torch.randn(10, 4)
    model(x).pow(2).mean().backward()
    opt.step()
    frame = mon.to_pandas()
    assert set(zip(frame["layer"], frame["param"], strict=True)) == {
        ("used", "weight"),
        ("used", "bias"),
        ("(root)", "scale"),
    }
    assert_grad_rows(frame, model, 0)
    depth = dict(zip(frame["layer"], frame["depth"], strict=True))
    assert depth["used"] < depth["(root)"]  # the root finishes its forward last
    layers = mon.to_pandas("layers").set_index("layer")
    assert layers.loc["frozen", "activation"] == "sigmoid"  # frozen layers still show signal
    mon.detach()


def test_gradient_accumulation_and_clipping_are_seen_as_applied(reduce_path):
    model = mlp()
    ref_model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = gradprobe.watch(model, opt, reducer=reduce_path)
    rec = Recorder({"4": ref_model[4], "5": ref_model[5]})
    batches = [torch.randn(16, 6) for _ in range(3)]
    for m in (model, ref_model):
        for xb in batches:
            (m(xb).pow(2).mean() / 3).backward()
        nn.utils.clip_grad_norm_(m.parameters(), max_norm=0.05)
    opt.step()
    assert_grad_rows(mon.to_pandas(), ref_model, 0)
    total = math.sqrt(sum(float(p.grad.double().square().sum()) for p in ref_model.parameters()))
    assert total <= 0.05 + 1e-6
    layers = mon.to_pandas("layers").set_index("layer")
    ref = act_stats(rec.outputs["5"], "relu")
    for col in ("act_mean", "act_std", "dead_frac"):
        assert close(float(layers.loc["4", col]), ref[col], 1e-5), col
    assert close(float(layers.loc["4", "backward_norm"]), rec.backward_norm("4"), 1e-5)
    mon.detach()


def test_param_groups_and_shared_module(reduce_path):
    torch.manual_seed(3)
    shared = nn.Linear(5, 5)
    model = nn.Sequential(shared, nn.Tanh(), shared, nn.Tanh(), nn.Linear(5, 1))
    opt = torch.optim.SGD(
        [{"params": shared.parameters(), "lr": 0.1}, {"params": model[4].parameters(), "lr": 0.01}]
    )
    mon = gradprobe.watch(model, opt, reducer=reduce_path)
    model(torch.randn(7, 5)).sum().backward()
    opt.step()
    frame = mon.to_pandas()
    assert len(frame) == 4  # the shared layer once
    assert_grad_rows(frame, model, 0)
    rows = frame.set_index(["layer", "param"])
    assert rows.loc[("0", "weight"), "depth"] == 0
    mon.detach()


def test_nonfinite_gradients_are_counted(reduce_path):
    model = mlp()
    mon = gradprobe.watch(model, reducer=reduce_path)
    x = torch.randn(4, 6)
    x[0, 0] = float("inf")
    model(x).sum().backward()
    mon.step()
    frame = mon.to_pandas()
    assert frame["grad_nonfinite"].sum() > 0
    assert_grad_rows(frame, model, 0)
    mon.detach()


def test_per_example_norms_match_explicit_per_example_gradients():
    model = mlp()
    mon = gradprobe.watch(model, per_example=True)
    x, y = torch.randn(12, 6), torch.randn(12, 1)
    F.mse_loss(model(x), y).backward()
    mon.step()
    frame = mon.to_pandas().set_index(["layer", "param"])
    ref_model = copy.deepcopy(model)
    for name in ("0", "2", "4", "6"):
        lin = ref_model[int(name)]
        sq = []
        for b in range(len(x)):
            ref_model.zero_grad()
            # the example's contribution to the batch-mean loss gradient
            (F.mse_loss(ref_model(x[b : b + 1]), y[b : b + 1]) / len(x)).backward()
            sq.append(float(lin.weight.grad.double().square().sum()))
        expected = math.sqrt(np.mean(sq))
        assert close(float(frame.loc[(name, "weight"), "pe_grad_rms"]), expected, 1e-4), name
        assert math.isnan(frame.loc[(name, "bias"), "pe_grad_rms"])
    mon.detach()


def test_amp_loss_scaling_records_unscaled_gradients():
    model = mlp()
    ref_model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    mon = gradprobe.watch(model, opt)
    x = torch.randn(8, 6)
    scaler.scale(model(x).pow(2).mean()).backward()
    scaler.step(opt)
    scaler.update()
    ref_model(x).pow(2).mean().backward()
    assert_grad_rows(mon.to_pandas(), ref_model, 0)
    mon.detach()


class InPlaceResidual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)
        self.out = nn.Linear(8, 1)

    def forward(self, x):  # type: ignore[no-untyped-def]
        h = torch.relu(self.a(x))
        h2 = F.gelu(self.b(h))
        h2 += h  # changes b's activation output in place, after the monitor saw it
        return self.out(h2)


def test_outputs_changed_in_place_later_are_never_misreported(reduce_path):
    torch.manual_seed(4)
    model = InPlaceResidual()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradprobe.watch(model, opt, reducer=reduce_path)
    x = torch.randn(16, 8)
    expected = []
    for _ in range(3):
        ref = copy.deepcopy(model)  # unwatched: its forward does not reach the monitor
        with torch.no_grad():
            expected.append(act_stats([F.gelu(ref.b(torch.relu(ref.a(x))))], "relu"))
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()
    layers = mon.to_pandas("layers").set_index(["step", "layer"])
    if reduce_path == "fused":
        measured = (0, 1, 2)  # the fused pass reads each output as soon as it is produced
    else:
        assert math.isnan(float(layers.loc[(0, "b"), "act_rms"]))  # deferred: lost, not wrong
        measured = (1, 2)  # measured as soon as produced from then on
    for step in measured:
        for col in ("act_mean", "act_rms", "dead_frac"):
            assert close(float(layers.loc[(step, "b"), col]), expected[step][col], 1e-5), col
    mon.detach()


def test_infinite_gradients_are_recorded_without_numpy_warnings(recwarn):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = gradprobe.watch(model, opt)
    x = torch.randn(5, 6)
    x[0, 0] = float("inf")
    model(x).sum().backward()
    opt.step()
    frame = mon.to_pandas()
    assert frame["grad_nonfinite"].sum() > 0
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    mon.detach()


def assert_update_norms_are_the_weights_change(model, opt, sched=None, reducer="auto") -> None:
    """Four watched steps; each recorded update norm is the weights' actual change."""
    mon = gradprobe.watch(model, opt, every=1, reducer=reducer)
    changes = []
    for _ in range(4):
        opt.zero_grad()
        model(torch.randn(16, 6)).pow(2).mean().backward()
        before = [p.detach().double().clone() for p in model.parameters()]
        opt.step()
        if sched is not None:
            sched.step()
        after = [p.detach().double() for p in model.parameters()]
        changes.append([float((a - b).norm()) for a, b in zip(after, before, strict=True)])
    frame = mon.to_pandas()
    mon.detach()
    for step, want in enumerate(changes):
        got = frame[frame["step"] == step]["update_norm"].to_numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4)


@pytest.mark.parametrize(
    "make_opt",
    [
        # plain SGD, two groups with their own lr: ||update|| = lr * ||g|| per parameter
        lambda m: torch.optim.SGD(
            [{"params": m[0].parameters(), "lr": 0.3}, {"params": m[2].parameters()}], lr=0.05
        ),
        lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, dampening=0.1),
        lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01),
        lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, nesterov=True),
        lambda m: torch.optim.SGD(m.parameters(), lr=0.05, weight_decay=0.1),
        lambda m: torch.optim.Adam(m.parameters(), lr=0.01),
    ],
    ids=["sgd-groups", "momentum", "momentum-wd", "nesterov", "sgd-wd", "adam"],
)
def test_update_norm_is_the_change_of_the_weights(reduce_path, make_opt):
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 1))
    assert_update_norms_are_the_weights_change(model, make_opt(model), reducer=reduce_path)


def test_sgd_update_norm_follows_a_learning_rate_schedule(reduce_path):
    # the SGD plan is cached between steps: a scheduler's new lr must still reach it
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.3)
    assert_update_norms_are_the_weights_change(model, opt, sched, reducer=reduce_path)
