"""The model zoo: real models on real training stacks, each with an independent reference.

Every setup builds a model and an optimizer, watches them, and trains a few steps with its own
loop (closures, accumulation, autocast, loss scaling, ...). While it trains it takes, in the same
step, an independent reference of the gradients that step applies: ``p.grad`` in float64 (divided
by the loss scale where the optimizer steps on scaled gradients), keyed the way gradprobe names
parameters. :func:`run` returns the monitor and the references; the tests compare them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import gradprobe

STEPS = 3


def param_key(name: str) -> tuple[str, str]:
    """(layer, param) as gradprobe names a parameter of ``model.named_parameters()``."""
    if ".parametrizations." in name:
        layer, rest = name.split(".parametrizations.", 1)
        pname, _, original = rest.partition(".")
        return layer, pname if original == "original" else f"{pname}.{original}"
    layer, _, pname = name.rpartition(".")
    return layer or "(root)", pname


@dataclass
class Refs:
    """Per step: (layer, param) -> ||g|| of the gradient the step applied (float64)."""

    steps: list[dict[tuple[str, str], float]] = field(default_factory=list)
    updates: list[dict[tuple[str, str], float]] = field(default_factory=list)
    _before: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)

    def take(self, model: nn.Module, scale: float = 1.0) -> None:
        self.steps.append(
            {
                param_key(n): float(p.grad.double().norm()) / scale
                for n, p in model.named_parameters()
                if p.grad is not None and p.requires_grad
            }
        )

    def before_step(self, model: nn.Module) -> None:
        self._before = {
            param_key(n): p.detach().double().clone() for n, p in model.named_parameters()
        }

    def after_step(self, model: nn.Module) -> None:
        """||W_after - W_before|| of every parameter the step was taken with."""
        self.updates.append(
            {
                param_key(n): float((p.detach().double() - self._before[param_key(n)]).norm())
                for n, p in model.named_parameters()
                if param_key(n) in self.steps[-1]
            }
        )


@dataclass
class Result:
    monitor: Any
    refs: Refs

    def max_rel_error(self) -> float:
        """Largest relative error of any recorded grad_norm against the reference."""
        params = self.monitor.to_pandas()
        worst = 0.0
        for step, ref in enumerate(self.refs.steps):
            rows = params[params["step"] == step]
            got = {(r.layer, r.param): r.grad_norm for r in rows.itertuples()}
            if set(got) != set(ref):
                missing, extra = sorted(set(ref) - set(got)), sorted(set(got) - set(ref))
                raise AssertionError(f"step {step}: rows missing {missing}, unexpected {extra}")
            for key, want in ref.items():
                err = abs(got[key] - want) / max(abs(want), 1e-300)
                worst = max(worst, err if want != 0 else abs(got[key]))
        return worst

    def max_update_error(self) -> float:
        """Largest relative error of a recorded update_norm against the weights' real change."""
        params = self.monitor.to_pandas()
        worst = 0.0
        for step, ref in enumerate(self.refs.updates):
            rows = params[params["step"] == step]
            got = {(r.layer, r.param): (r.update_norm, r.weight_norm) for r in rows.itertuples()}
            for key, want in ref.items():
                update, weight = got[key]
                worst = max(worst, abs(update - want) / max(want, 1e-7 * weight))
        return worst


# ------------------------------------------------------------------ models
def mlp(depth: int = 3, width: int = 16, act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(8, width), act()]
    for _ in range(depth - 2):
        layers += [nn.Linear(width, width), act()]
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(h)))


class ResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(Block(8), Block(8))
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(F.relu(self.stem(x)))
        return self.head(h.mean(dim=(2, 3)))


class Recurrent(nn.Module):
    def __init__(self, cell: type[nn.Module]) -> None:
        super().__init__()
        self.rnn = cell(6, 16, num_layers=2, batch_first=True)
        self.head = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class Encoder(nn.Module):
    def __init__(self, norm_first: bool) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 32)
        layer = nn.TransformerEncoderLayer(
            32, 4, 64, dropout=0.0, batch_first=True, norm_first=norm_first
        )
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x)).mean(1))


# --------------------------------------------------------------- data
def regression(seed: int, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, generator=g), torch.randn(n, 1, generator=g)


def sequences(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 10, 6, generator=g), torch.randn(8, 1, generator=g)


# ------------------------------------------------------------- setups
def _plain(
    model: nn.Module,
    data: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    opt_cls: Callable[..., torch.optim.Optimizer] = torch.optim.SGD,
    loss: Callable[..., torch.Tensor] = F.mse_loss,
    **watch: Any,
) -> Result:
    opt = opt_cls(model.parameters(), lr=1e-2)

    def backward(s: int) -> None:
        x, y = data(s)
        loss(model(x), y).backward()

    return _loop(model, opt, backward, **watch)


def _loop(
    model: nn.Module, opt: torch.optim.Optimizer, backward: Callable[[int], None], **watch: Any
) -> Result:
    """Watch, then train STEPS steps: ``backward(step)`` fills the gradients; the reference is
    taken right before ``opt.step()`` and the weights' change right after it."""
    refs = Refs()
    mon = gradprobe.watch(model, opt, **watch)
    for s in range(STEPS):
        opt.zero_grad()
        backward(s)
        refs.take(model)
        refs.before_step(model)
        opt.step()
        refs.after_step(model)
    mon.detach()
    return Result(mon, refs)


def setup_mlp() -> Result:
    torch.manual_seed(0)
    return _plain(mlp(), regression)


def setup_resnet_bn() -> Result:
    torch.manual_seed(0)
    model = ResNet()

    def data(s: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(s)
        return torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 10, (4,), generator=g)

    return _plain(model, data, loss=F.cross_entropy)


def setup_transformer_post() -> Result:
    torch.manual_seed(0)
    return _plain(Encoder(norm_first=False), sequences, opt_cls=torch.optim.AdamW)


def setup_transformer_pre() -> Result:
    torch.manual_seed(0)
    return _plain(Encoder(norm_first=True), sequences, opt_cls=torch.optim.AdamW)


def setup_lstm() -> Result:
    torch.manual_seed(0)
    return _plain(Recurrent(nn.LSTM), sequences)


def setup_gru() -> Result:
    torch.manual_seed(0)
    return _plain(Recurrent(nn.GRU), sequences)


def setup_gpt2() -> Result:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=32)
    model = GPT2LMHeadModel(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def backward(s: int) -> None:
        ids = torch.randint(0, 100, (4, 16), generator=torch.Generator().manual_seed(s))
        model(input_ids=ids, labels=ids).loss.backward()

    return _loop(model, opt, backward)


def setup_accumulation() -> Result:
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)

    def backward(s: int) -> None:
        for micro in range(4):
            x, y = regression(10 * s + micro, n=8)
            (F.mse_loss(model(x), y) / 4).backward()

    return _loop(model, opt, backward)


def setup_autocast_bf16() -> Result:
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def backward(s: int) -> None:
        x, y = regression(s)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        F.mse_loss(out.float(), y).backward()

    return _loop(model, opt, backward)


def _scaled(fused: bool) -> Result:
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    refs = Refs()
    mon = gradprobe.watch(model, opt, scaler=scaler)
    for s in range(STEPS):
        x, y = regression(s)
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        scaler.scale(F.mse_loss(out.float(), y)).backward()
        if not fused:
            scaler.unscale_(opt)
            refs.take(model)
        else:  # a fused optimizer steps on the scaled gradients and unscales inside
            refs.take(model, scale=float(scaler.get_scale()))
        refs.before_step(model)
        scaler.step(opt)
        refs.after_step(model)
        scaler.update()
    mon.detach()
    return Result(mon, refs)


def setup_gradscaler() -> Result:
    return _scaled(fused=False)


def setup_gradscaler_fused_adam() -> Result:
    return _scaled(fused=True)


def setup_sgd_closure() -> Result:
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    refs = Refs()
    mon = gradprobe.watch(model, opt)
    for s in range(STEPS):
        x, y = regression(s)

        def closure(x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
            opt.zero_grad()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            refs.take(model)
            return loss

        refs.before_step(model)
        opt.step(closure)
        refs.after_step(model)
    mon.detach()
    return Result(mon, refs)


def setup_lbfgs() -> Result:
    """LBFGS calls the closure several times a step: the first call's gradients are recorded
    (the gradient at the point the step starts from)."""
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=4)
    refs = Refs()
    mon = gradprobe.watch(model, opt)
    for s in range(STEPS):
        x, y = regression(s)
        calls = [0]

        def closure(x: torch.Tensor = x, y: torch.Tensor = y, calls: list[int] = calls) -> Any:
            opt.zero_grad()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            if calls[0] == 0:
                refs.take(model)
            calls[0] += 1
            return loss

        refs.before_step(model)
        opt.step(closure)
        refs.after_step(model)
        assert calls[0] > 1, "LBFGS should call the closure more than once"
    mon.detach()
    return Result(mon, refs)


def setup_weight_norm() -> Result:
    torch.manual_seed(0)
    model = mlp()
    model[0] = nn.utils.parametrizations.weight_norm(model[0])
    return _plain(model, regression)


def setup_unfrozen_later() -> Result:
    """The first layer is frozen for step 0 and trainable from step 1 on."""
    torch.manual_seed(0)
    model = mlp()
    model[0].requires_grad_(False)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)

    def backward(s: int) -> None:
        if s == 1:
            model[0].requires_grad_(True)
        x, y = regression(s)
        F.mse_loss(model(x), y).backward()

    return _loop(model, opt, backward)


def setup_bf16_weights_sgd() -> Result:
    torch.manual_seed(0)
    model = mlp().to(torch.bfloat16)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def backward(s: int) -> None:
        x, y = regression(s)
        F.mse_loss(model(x.bfloat16()).float(), y).backward()

    return _loop(model, opt, backward)


HEALTHY: dict[str, Callable[[], Result]] = {
    "mlp": setup_mlp,
    "resnet_bn": setup_resnet_bn,
    "transformer_post_norm": setup_transformer_post,
    "transformer_pre_norm": setup_transformer_pre,
    "lstm": setup_lstm,
    "gru": setup_gru,
    "gpt2_from_config": setup_gpt2,
    "grad_accumulation": setup_accumulation,
    "autocast_bf16": setup_autocast_bf16,
    "gradscaler": setup_gradscaler,
    "gradscaler_fused_adam": setup_gradscaler_fused_adam,
    "sgd_closure": setup_sgd_closure,
    "lbfgs": setup_lbfgs,
    "weight_norm": setup_weight_norm,
    "unfrozen_later": setup_unfrozen_later,
    "bf16_weights_sgd": setup_bf16_weights_sgd,
}


# ------------------------------------------------------------ broken
def broken_deep_sigmoid() -> Any:
    torch.manual_seed(0)
    model = mlp(depth=20, width=32, act=nn.Sigmoid)
    return _train_for_diagnosis(model, lr=1e-2, steps=5)


def broken_dead_relu() -> Any:
    torch.manual_seed(0)
    model = mlp(depth=6, width=32)
    with torch.no_grad():
        for m in list(model)[2:-1]:
            if isinstance(m, nn.Linear):
                m.bias.fill_(-10.0)
    return _train_for_diagnosis(model, lr=1e-2, steps=5)


def broken_huge_lr() -> Any:
    torch.manual_seed(0)
    model = mlp(depth=4, width=32)
    return _train_for_diagnosis(model, lr=1e6, steps=8)


def _train_for_diagnosis(model: nn.Module, lr: float, steps: int) -> Any:
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    mon = gradprobe.watch(model, opt)
    for s in range(steps):
        x, y = regression(s, n=64)
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        if not math.isfinite(float(loss.detach())):
            loss = loss.nan_to_num()
        loss.backward()
        opt.step()
    mon.detach()
    return mon


BROKEN: dict[str, tuple[Callable[[], Any], str]] = {
    "deep_sigmoid_20": (broken_deep_sigmoid, "vanishing"),
    "dead_relu": (broken_dead_relu, "dead_units"),
    "huge_lr_nan": (broken_huge_lr, "non_finite"),
}
