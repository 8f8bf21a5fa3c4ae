"""Training the experiments' networks with PyTorch, watched by the monitor.

The networks are built to match Keras's defaults, so numbers can be set beside the seed notebooks:
weights drawn by :mod:`gradprobe.experiments.init` (Glorot-uniform kernels, zero biases), and
optimizers with Keras's update rules (Adam and RMSprop with epsilon 1e-7 applied as Keras does).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gradprobe.experiments.data import Dataset
from gradprobe.experiments.init import mlp_weights
from gradprobe.experiments.outcome import Outcome
from gradprobe.experiments.spec import ModelSpec, TrainSpec, Variant
from gradprobe.torch.monitor import watch

_ACT_MODULES: dict[str, Callable[[], nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),  # Keras's default slope
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


def build_mlp(spec: ModelSpec, n_inputs: int, seed: int) -> nn.Sequential:
    """The MLP of ``spec`` with weights drawn from ``numpy.random.default_rng(seed)``.

    A plain spec gives ``Sequential(Linear, act, Linear, act, ..., Linear[, out act])``; with
    normalisation or residual connections each hidden layer is a :class:`Block` instead.
    """
    widths = spec.widths(n_inputs)
    weights = mlp_weights(seed, widths, spec.init)
    linears = [_linear(kernel, bias) for kernel, bias in weights]
    layers: list[nn.Module] = []
    for i, lin in enumerate(linears[:-1]):
        if spec.plain:
            layers += [lin] + _act_list(spec.activation)
        else:
            scale = spec.residual_scale if spec.residual and i > 0 else None
            layers.append(Block(lin, _norm(spec.norm, spec.width), spec.activation, scale))
    layers += [linears[-1]] + _act_list(spec.output_activation)
    return nn.Sequential(*layers)


def _linear(kernel: np.ndarray, bias: np.ndarray) -> nn.Linear:
    lin = nn.Linear(kernel.shape[0], kernel.shape[1])
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(kernel.T.copy()))
        lin.bias.copy_(torch.from_numpy(bias))
    return lin


def _act_list(name: str) -> list[nn.Module]:
    return [] if name == "linear" else [_ACT_MODULES[name]()]


def _norm(name: str, width: int) -> nn.Module | None:
    if name == "batch":
        return nn.BatchNorm1d(width)
    if name == "layer":
        return nn.LayerNorm(width)
    return None


class Block(nn.Module):
    """One hidden layer: ``a = act(norm(lin(x)))``; returns ``x + scale * a`` when ``scale`` is
    set (a residual connection), else ``a``."""

    def __init__(
        self, lin: nn.Linear, norm: nn.Module | None, activation: str, scale: float | None
    ) -> None:
        super().__init__()
        self.lin, self.norm, self.scale = lin, norm, scale
        acts = _act_list(activation)
        self.act = acts[0] if acts else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        if self.norm is not None:
            h = self.norm(h)
        h = self.act(h)
        return x + self.scale * h if self.scale is not None else h


class EagerOptimizer(torch.optim.Optimizer):
    """A torch optimizer that never imports ``torch._dynamo`` (1-2 s, a third of the demo's
    start-up): torch wraps ``add_param_group`` and ``zero_grad`` in ``torch._disable_dynamo``,
    which imports it on the first call, and its own ``step`` methods import it on every call.
    Here the two are called unwrapped (nothing is compiled in this process, so there is nothing
    to disable) and subclasses write ``step`` without torch's wrapper. The optimizer hooks
    (``register_step_pre_hook`` / ``_post_hook``, which the monitor uses) work as usual."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        raw = getattr(torch.optim.Optimizer.add_param_group, "__wrapped__", None)
        if raw is None:  # a torch without the lazy wrapper: nothing to avoid
            super().add_param_group(param_group)
        else:
            raw(self, param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().zero_()


class PlainSGD(EagerOptimizer):
    """SGD without momentum: ``w -= lr * g``, the arithmetic of ``torch.optim.SGD(lr=lr)``
    (same numbers) in one ``torch._foreach_add_`` call instead of a loop over parameters."""

    def __init__(self, params: Any, lr: float) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.grad is not None]
            if ps:
                torch._foreach_add_(ps, [p.grad for p in ps], alpha=-group["lr"])
        return loss


class KerasAdam(EagerOptimizer):
    """Adam (and AdamW) with Keras's update: ``w -= lr_t * m / (sqrt(v) + eps)``.

    ``lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)``. Unlike torch.optim.Adam, epsilon is added
    to the uncorrected sqrt(v), which matters when gradients are as small as epsilon (the deep
    sigmoid network's first layer). ``weight_decay`` is decoupled, as in Keras's AdamW.
    """

    def __init__(
        self,
        params: Any,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-7,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(
            params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        )

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            b1, b2 = group["betas"]
            ps = [p for p in group["params"] if p.grad is not None]
            for p in ps:
                state = self.state[p]
                if not state:
                    state["t"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                state["t"] += 1
            by_t: dict[int, list[torch.Tensor]] = {}
            for p in ps:  # one batch of foreach calls per step count (one, in practice)
                by_t.setdefault(self.state[p]["t"], []).append(p)
            for t, same in by_t.items():
                self._update(same, group, t, b1, b2)
        return loss

    def _update(
        self, ps: list[torch.Tensor], group: dict[str, Any], t: int, b1: float, b2: float
    ) -> None:
        """The Keras update of ``ps`` (all at step ``t``) as foreach calls: the same kernels,
        hence the same numbers, as one parameter at a time, in 7 calls instead of 7 per
        parameter."""
        grads = [p.grad for p in ps if p.grad is not None]
        ms = [self.state[p]["m"] for p in ps]
        vs = [self.state[p]["v"] for p in ps]
        torch._foreach_lerp_(ms, grads, 1 - b1)
        torch._foreach_mul_(vs, b2)
        torch._foreach_addcmul_(vs, grads, grads, value=1 - b2)
        alpha = group["lr"] * math.sqrt(1 - b2**t) / (1 - b1**t)
        if group["weight_decay"]:
            torch._foreach_mul_(ps, 1 - group["lr"] * group["weight_decay"])
        denom = torch._foreach_sqrt(vs)
        torch._foreach_add_(denom, group["eps"])
        torch._foreach_addcdiv_(ps, ms, denom, value=-alpha)


def make_optimizer(name: str, params: Any, lr: float) -> torch.optim.Optimizer:
    """The optimizer ``name`` with Keras's defaults."""
    if name == "sgd":
        return PlainSGD(params, lr=lr)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    if name == "adam":
        return KerasAdam(params, lr=lr)
    if name == "adamw":
        return KerasAdam(params, lr=lr, weight_decay=0.004)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=0.9, eps=1e-7)
    raise ValueError(name)


def _loss(name: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if name == "mse":
        return F.mse_loss(out, y)
    if name == "ce":  # logits; y holds class indices as floats, shape (n, 1)
        return F.cross_entropy(out, y[:, 0].long())
    # the model ends in a sigmoid; clip as Keras does so log never sees 0
    p = out.clamp(1e-7, 1 - 1e-7)
    return F.binary_cross_entropy(p, y)


def _evaluate(model: nn.Module, loss: str, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Loss (and accuracy) in eval mode: BatchNorm uses its running statistics."""
    model.eval()
    with torch.no_grad():
        out = model(x)
        res = {"loss": float(_loss(loss, out, y))}
        if loss == "bce":
            res["accuracy"] = float(((out > 0.5).float() == y).float().mean())
        elif loss == "ce":
            res["accuracy"] = float((out.argmax(1) == y[:, 0].long()).float().mean())
    model.train()
    return res


def _unwatched_copy(model: nn.Module, spec: ModelSpec, n_inputs: int) -> nn.Module:
    """A model of the same shape the monitor does not watch, to evaluate ``model`` in (its
    weights copied in by :func:`_epoch_row`): evaluating the watched one would add the
    evaluation's forward passes to the next recorded step's statistics. Built once per
    training, not once per epoch (drawing its throw-away initial weights cost 4 ms)."""
    return build_mlp(spec, n_inputs, 0)


def _batches(n: int, batch: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    order = rng.permutation(n) if rng is not None else np.arange(n)
    return [order[i : i + batch] for i in range(0, n, batch)]


class _Unwatched:
    """The Recorder of a run trained without a monitor (extra seeds): no records."""

    def to_pandas(self, table: str = "params") -> Any:
        import pandas as pd

        return pd.DataFrame()

    def flush(self) -> None:
        pass

    def detach(self) -> None:
        pass


def train(
    variant: Variant,
    data: Dataset,
    train: TrainSpec,
    *,
    every: int = 1,
    log_dir: Path | None = None,
    on_step: Callable[[int, float], None] | None = None,
    watched: bool = True,
) -> Outcome:
    """Train one variant from ``train.seed``; stops early on a non-finite loss or Ctrl-C.

    ``watched=False`` trains with no monitor (``monitor.to_pandas()`` is empty): the outcome of
    an extra seed. The first-layer rows (true gradient, the notebook's estimate) are kept for
    the recorded steps (0, every, 2*every, ...). The networks are small, so training runs on
    one thread: more threads only add synchronisation (10x slower on a busy 2-core machine).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(variant, data, train, every, log_dir, on_step, watched)
    finally:
        torch.set_num_threads(threads)


def _train(
    variant: Variant,
    data: Dataset,
    train: TrainSpec,
    every: int,
    log_dir: Path | None,
    on_step: Callable[[int, float], None] | None,
    watched: bool,
) -> Outcome:
    torch.manual_seed(train.seed)
    model = build_mlp(variant.model, data.n_features, train.seed)
    opt = make_optimizer(train.optimizer, model.parameters(), train.lr)
    rows = train.rows or len(data.x_train)
    x = torch.from_numpy(data.x_train[:rows])
    y = torch.from_numpy(data.y_train[:rows])
    xt, yt = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)
    batch = train.batch_size or rows
    rng = np.random.default_rng([train.seed, 1]) if train.shuffle else None
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    judge = _unwatched_copy(model, variant.model, data.n_features) if watched else model
    mon: Any = (
        watch(model, opt, every=every, per_example=True, log_dir=log_dir)
        if watched
        else _Unwatched()
    )
    out = Outcome(mon)
    out.start = _epoch_row(model, judge, train, x, y, xt, yt, -1, 0)
    w_start = first.weight.detach().clone()
    step = 0
    try:
        for epoch in range(train.epochs):
            for idx in _batches(rows, batch, rng):
                ib = torch.from_numpy(idx)
                opt.zero_grad(set_to_none=True)
                loss = _loss(train.loss, model(x[ib]), y[ib])
                loss.backward()
                keep = watched and step % every == 0
                if keep:
                    grad = first.weight.grad
                    g1 = grad.detach().clone() if grad is not None else torch.zeros(0)
                    w_before = first.weight.detach().clone()
                if train.clip_norm is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), train.clip_norm)
                opt.step()
                value = loss.item()
                out.steps.append({"step": step, "epoch": epoch, "loss": value})
                if keep:
                    w_now = first.weight.detach()
                    out.firstlayer.append(
                        {
                            "step": step,
                            "true_mean_abs_grad": float(g1.abs().mean()),
                            "estimate_mean_abs": float(
                                ((w_before - w_now) / train.lr).abs().mean()
                            ),
                            "cumulative_estimate_mean_abs": float(
                                ((w_start - w_now) / train.lr).abs().mean()
                            ),
                        }
                    )
                if on_step is not None:
                    on_step(step, value)
                step += 1
                if not math.isfinite(value):
                    out.status = "non_finite"
                    out.message = f"non-finite loss ({value}) at step {step - 1}"
                    return out
            out.epochs.append(_epoch_row(model, judge, train, x, y, xt, yt, epoch, step))
    except KeyboardInterrupt:
        out.status = "interrupted"
        out.message = f"interrupted by the user after {step} steps"
    finally:
        mon.detach()
        mon.flush()
    return out


def _epoch_row(
    model: nn.Module,
    judge: nn.Module,
    train: TrainSpec,
    x: torch.Tensor,
    y: torch.Tensor,
    xt: torch.Tensor,
    yt: torch.Tensor,
    epoch: int,
    step: int,
) -> dict[str, Any]:
    """Train and test loss (and accuracy) of ``model`` after ``epoch`` (-1: before training),
    evaluated in ``judge``: ``model`` itself, or an unwatched copy its weights are loaded into."""
    if judge is not model:
        judge.load_state_dict(model.state_dict())
    ev_tr = _evaluate(judge, train.loss, x, y)
    ev_te = _evaluate(judge, train.loss, xt, yt)
    return {
        "epoch": epoch,
        "steps": step,
        "train_loss": ev_tr["loss"],
        "test_loss": ev_te["loss"],
        "train_accuracy": ev_tr.get("accuracy", math.nan),
        "test_accuracy": ev_te.get("accuracy", math.nan),
    }
