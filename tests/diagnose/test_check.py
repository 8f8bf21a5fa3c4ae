"""gradprobe.torch.check: one pass, findings, and the model left exactly as it was."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from gradprobe.diagnosis import diagnose  # noqa: E402
from gradprobe.errors import CaptureError, UsageError  # noqa: E402
from gradprobe.torch.check import CheckResult, check  # noqa: E402


@pytest.fixture(autouse=True)
def _one(one_thread):
    yield


def net(act: type[nn.Module], depth: int = 8, width: int = 32) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(16, width), nn.BatchNorm1d(width), act(), nn.Dropout(0.1)]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), act()]
    return nn.Sequential(*layers, nn.Linear(width, 1))


def snapshot(model: nn.Module):
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "grads": [(p.grad, None if p.grad is None else p.grad.clone()) for p in model.parameters()],
        "modes": [m.training for m in model.modules()],
        "hooks": [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for m in model.modules()
        ],
        "rng": torch.get_rng_state(),
    }


def assert_same(before, model: nn.Module) -> None:
    after = snapshot(model)
    assert before["state"].keys() == after["state"].keys()
    for k, v in before["state"].items():
        assert torch.equal(v, after["state"][k]), k
    for (obj, val), p in zip(before["grads"], model.parameters(), strict=True):
        assert p.grad is obj  # the very same tensor object (or None)
        if val is not None:
            assert torch.equal(p.grad, val)
    assert after["modes"] == before["modes"]
    assert after["hooks"] == before["hooks"]
    assert torch.equal(after["rng"], before["rng"])


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("grads", ["none", "existing"])
def test_check_leaves_the_model_exactly_as_it_was(mode, grads):
    torch.manual_seed(0)
    model = net(nn.ReLU)
    model.train(mode == "train")
    model[3].eval()  # a mixed state must come back mixed
    x, y = torch.randn(64, 16), torch.randn(64, 1)
    if grads == "existing":
        nn.functional.mse_loss(model(x), y).backward()
    before = snapshot(model)
    result = check(model, x, y, nn.MSELoss())
    assert isinstance(result, CheckResult)
    assert_same(before, model)


def test_check_finds_vanishing_in_a_deep_sigmoid_net_and_nothing_in_relu_he():
    torch.manual_seed(1)
    x, y = torch.randn(128, 16), torch.randn(128, 1)
    sick = check(net(nn.Sigmoid, depth=10), x, y, nn.MSELoss())
    assert "vanishing" in [f.code for f in sick.findings] and not sick.ok
    healthy = net(nn.ReLU, depth=10)
    for m in healthy.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight)
            nn.init.zeros_(m.bias)
    fine = check(healthy, x, y, nn.MSELoss())
    assert fine.findings == () and fine.ok and fine.verdict.startswith("healthy")


def test_the_result_is_a_per_layer_table_and_monitor_like():
    torch.manual_seed(2)
    result = check(net(nn.Tanh, depth=4), torch.randn(32, 16), torch.randn(32, 1), nn.MSELoss())
    t = result.table
    assert list(t["depth"]) == sorted(t["depth"]) and len(t) == 6  # 5 Linear + BatchNorm
    assert t["backward_norm"].notna().all()
    assert t.loc[t["kind"] == "Linear", "pe_grad_rms"].notna().all()  # per-example: Linear only
    assert math.isfinite(result.loss)
    assert [f.code for f in diagnose(result)] == [f.code for f in result.findings]
    assert "verdict" in str(result)


def test_bad_arguments_say_what_was_expected():
    with pytest.raises(CaptureError, match="nn.Module"):
        check("model", 1, 2, nn.MSELoss())  # type: ignore[arg-type]
    model = net(nn.ReLU, depth=2)
    x, y = torch.randn(8, 16), torch.randn(8, 1)
    before = snapshot(model)
    with pytest.raises(UsageError, match="scalar"):
        check(model, x, y, lambda out, y: out - y)
    assert_same(before, model)
