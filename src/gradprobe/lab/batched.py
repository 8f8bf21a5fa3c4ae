"""Several seeds of one MLP trained as one batched model: stacked weights and ``torch.bmm``.

Seed ``s`` of the stack is the network :func:`gradprobe.experiments.torch_backend.train` builds
for ``seed=s``: the same initial weights, the same shuffled batches, the same optimizer (an
elementwise update applied to stacked tensors updates each seed as alone), the same clipping
(per seed) and the same records as the monitor writes (per seed), so every number agrees with
training the seeds one after the other, to float tolerance. The loss summed over seeds has, for
each seed's weights, exactly that seed's gradient.

It pays where each model is small (overhead-bound); a compute-bound model gains nothing
(:func:`gradprobe.lab.estimate.choose_batched`). Normalisation layers are not supported here:
cells with ``norm`` other than ``none`` train one seed at a time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from gradprobe import stats as S
from gradprobe.experiments.data import Dataset
from gradprobe.experiments.init import mlp_weights
from gradprobe.experiments.spec import ModelSpec, TrainSpec
from gradprobe.experiments.torch_backend import build_mlp, make_optimizer
from gradprobe.lab.estimate import supports  # noqa: F401  (re-exported)
from gradprobe.records import LAYER_KEYS, LAYER_STATS, conform
from gradprobe.stats import Activation

_FUNCS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "leaky_relu": lambda z: F.leaky_relu(z, S.LEAKY_SLOPE),
    "elu": F.elu,
    "selu": F.selu,
    "gelu": F.gelu,
    "silu": F.silu,
    "linear": lambda z: z,
}
_ACTS: dict[str, Activation] = S.BY_NAME


@dataclass
class SeedsResult:
    """Per-seed tables of a group of seeds, each with a ``seed`` column.

    ``steps``: seed, step, epoch, loss. ``epochs``: seed, epoch, steps, train/test loss and
    accuracy. ``params``/``layers``: the monitor's record tables (:mod:`gradprobe.records`).
    ``status``/``message``: per seed, ``complete`` or ``non_finite`` and why.
    """

    steps: pd.DataFrame
    epochs: pd.DataFrame
    params: pd.DataFrame
    layers: pd.DataFrame
    status: dict[int, str]
    message: dict[int, str]
    wall_s: float


class _Stack:
    """S copies of a plain or residual MLP: kernels (S, in, out), biases (S, 1, out)."""

    def __init__(self, spec: ModelSpec, n_inputs: int, seeds: Sequence[int]) -> None:
        widths = spec.widths(n_inputs)
        per_seed = [mlp_weights(s, widths, spec.init) for s in seeds]
        self.kernels = [
            _leaf(np.stack([w[i][0] for w in per_seed])) for i in range(len(widths) - 1)
        ]
        self.biases = [
            _leaf(np.stack([w[i][1] for w in per_seed])[:, None, :]) for i in range(len(widths) - 1)
        ]
        self.spec = spec
        n = len(self.kernels)
        self.acts = [spec.activation] * (n - 1) + [spec.output_activation]
        self.names = [
            name
            for name, m in build_mlp(spec, n_inputs, 0).named_modules()
            if isinstance(m, nn.Linear)
        ]

    def params(self) -> list[torch.Tensor]:
        """In the torch model's order: weight, bias of each layer."""
        return [p for pair in zip(self.kernels, self.biases, strict=True) for p in pair]

    def forward(self, x: torch.Tensor, keep: bool = False) -> tuple[torch.Tensor, list]:
        """Output (S, B, outputs) of x (S, B, F) or (B, F); with ``keep`` also each layer's
        (input, pre-activation z with retained grad, activation output)."""
        kept = []
        h = x
        last = len(self.kernels) - 1
        for i, (w, b) in enumerate(zip(self.kernels, self.biases, strict=True)):
            z = torch.matmul(h, w) + b
            a = _FUNCS[self.acts[i]](z)
            if keep:
                z.retain_grad()
                kept.append((h, z, a))
            h = h + self.spec.residual_scale * a if self.spec.residual and 0 < i < last else a
        return h, kept


def _leaf(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).requires_grad_()


def per_seed_loss(name: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean loss of each seed, shape (S,); ``y`` is (S, B, 1) or (B, 1)."""
    y = y.expand(out.shape[0], *y.shape[-2:])
    if name == "mse":
        return (out - y).square().mean((1, 2))
    if name == "ce":
        s, b, c = out.shape
        ce = F.cross_entropy(out.reshape(s * b, c), y.reshape(-1).long(), reduction="none")
        return ce.reshape(s, b).mean(1)
    p = out.clamp(1e-7, 1 - 1e-7)
    return F.binary_cross_entropy(p, y, reduction="none").mean((1, 2))


def _accuracy(name: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if name == "bce":
        return ((out > 0.5).float() == y).float().mean((1, 2))
    if name == "ce":
        return (out.argmax(2) == y[:, 0].long()).float().mean(1)
    return torch.full((out.shape[0],), math.nan)


def _clip(params: list[torch.Tensor], max_norm: float) -> None:
    """Per seed, as torch.nn.utils.clip_grad_norm_ does for one model."""
    sq = torch.stack([_grad(p).reshape(p.shape[0], -1).square().sum(1) for p in params]).sum(0)
    coef = (max_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)
    for p in params:
        _grad(p).mul_(coef.reshape(-1, *([1] * (p.ndim - 1))))


def _grad(t: torch.Tensor) -> torch.Tensor:
    """``t.grad``, which backward has set."""
    assert t.grad is not None
    return t.grad


def train_seeds(
    spec: ModelSpec,
    data: Dataset,
    train: TrainSpec,
    seeds: Sequence[int],
    *,
    every: int = 1,
) -> SeedsResult:
    """Train ``spec`` once per seed, all seeds at once; see the module docstring."""
    t0 = time.perf_counter()
    seeds = list(seeds)
    net = _Stack(spec, data.n_features, seeds)
    params = net.params()
    opt = make_optimizer(train.optimizer, params, train.lr)
    rows = train.rows or len(data.x_train)
    x, y = torch.from_numpy(data.x_train[:rows]), torch.from_numpy(data.y_train[:rows])
    xt, yt = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)
    batch = train.batch_size or rows
    rngs = [np.random.default_rng([s, 1]) if train.shuffle else None for s in seeds]
    rec = _Recorder(net, seeds)
    alive = np.ones(len(seeds), dtype=bool)
    status = {s: "complete" for s in seeds}
    message = {s: "" for s in seeds}
    steps, epochs = [], []
    step = 0
    for epoch in range(train.epochs):
        orders = [r.permutation(rows) if r is not None else np.arange(rows) for r in rngs]
        order = torch.from_numpy(np.stack(orders))
        for start in range(0, rows, batch):
            idx = order[:, start : start + batch]
            record = step % every == 0
            opt.zero_grad(set_to_none=True)
            out, kept = net.forward(x[idx], keep=record)
            losses = per_seed_loss(train.loss, out, y[idx])
            losses.sum().backward()
            if train.clip_norm is not None:
                _clip(params, train.clip_norm)
            if record:
                rec.before_update(step, kept, alive)
            opt.step()
            if record:
                rec.after_update()
            values = losses.detach().numpy().astype(float)
            for i in np.flatnonzero(alive):
                steps.append((seeds[i], step, epoch, values[i]))
            bad = alive & ~np.isfinite(values)
            for i in np.flatnonzero(bad):
                status[seeds[i]] = "non_finite"
                message[seeds[i]] = f"non-finite loss ({values[i]}) at step {step}"
            alive &= ~bad
            step += 1
        if not alive.any():
            break
        epochs += _evaluate(net, train.loss, (x, y), (xt, yt), seeds, alive, epoch, step)
    wall = time.perf_counter() - t0
    return SeedsResult(
        pd.DataFrame(steps, columns=["seed", "step", "epoch", "loss"]),
        pd.DataFrame(epochs, columns=_EPOCH_COLUMNS),
        rec.params(),
        rec.layers(),
        status,
        message,
        wall,
    )


_EPOCH_COLUMNS = [
    "seed",
    "epoch",
    "steps",
    "train_loss",
    "test_loss",
    "train_accuracy",
    "test_accuracy",
]


def _evaluate(net: _Stack, loss: str, tr, te, seeds, alive, epoch: int, step: int) -> list:
    with torch.no_grad():
        res = []
        for xx, yy in (tr, te):
            out, _ = net.forward(xx)
            res.append((per_seed_loss(loss, out, yy).numpy(), _accuracy(loss, out, yy).numpy()))
    (l_tr, a_tr), (l_te, a_te) = res
    return [
        (seeds[i], epoch, step, float(l_tr[i]), float(l_te[i]), float(a_tr[i]), float(a_te[i]))
        for i in np.flatnonzero(alive)
    ]


class _Recorder:
    """The monitor's two record tables, computed for all seeds at once per recorded step."""

    def __init__(self, net: _Stack, seeds: list[int]) -> None:
        self.net, self.seeds = net, np.asarray(seeds)
        self._params: list[dict[str, np.ndarray]] = []
        self._layers: list[dict[str, np.ndarray]] = []
        self._before: list[torch.Tensor] = []
        self._pending: dict[str, Any] | None = None

    def before_update(self, step: int, kept: list, alive: np.ndarray) -> None:
        ps = self.net.params()
        g = torch.stack([_moments(_grad(p)) for p in ps], 1).numpy()  # (S, P, 5)
        w = torch.stack([_sq(p.detach()) for p in ps], 1).numpy()
        pe = torch.stack([_pe(h, z) for h, z, _ in kept], 1).numpy()  # (S, L)
        self._before = [p.detach().double().clone() for p in ps]
        self._pending = {"step": step, "g": g, "w": w, "pe": pe, "alive": alive.copy()}
        self._record_layers(step, kept, alive)

    def after_update(self) -> None:
        ps = self.net.params()
        u = torch.stack(
            [_sq(p.detach().double() - b) for p, b in zip(ps, self._before, strict=True)], 1
        )
        d = self._pending
        assert d is not None
        self._emit_params(d, u.numpy())
        self._pending, self._before = None, []

    def _emit_params(self, d: dict, u: np.ndarray) -> None:
        s_idx = np.flatnonzero(d["alive"])
        g, w = d["g"][s_idx], d["w"][s_idx]
        n_s, n_p = g.shape[:2]
        ps = self.net.params()
        numel = np.array([p[0].numel() for p in ps])
        stats = S.param_columns(
            g[..., 0], g[..., 1], g[..., 2], g[..., 3], g[..., 4], w, u[s_idx], numel
        )  # a zero-initialised bias that moved: update_ratio inf, as the monitor records
        stats["grad_nonfinite"] = stats["grad_nonfinite"].astype(np.int64)
        pe = np.full((n_s, n_p), np.nan)
        pe[:, 0::2] = S.norm(d["pe"][s_idx])
        n_layers = len(self.net.names)
        self._params.append(
            {
                "seed": np.repeat(self.seeds[s_idx], n_p),
                "step": np.full(n_s * n_p, d["step"]),
                "layer": np.tile(np.repeat(self.net.names, 2), n_s),
                "param": np.tile(["weight", "bias"] * n_layers, n_s),
                "depth": np.tile(np.repeat(np.arange(n_layers), 2), n_s),
                "numel": np.tile(numel, n_s),
                **{c: v.ravel() for c, v in stats.items()},
                "pe_grad_rms": pe.ravel(),
            }
        )

    def _record_layers(self, step: int, kept: list, alive: np.ndarray) -> None:
        s_idx = np.flatnonzero(alive)
        cols: dict[str, list[np.ndarray]] = {k: [] for k in _LAYER_COLS}
        for depth, ((_, z, a), act_name) in enumerate(zip(kept, self.net.acts, strict=True)):
            act = _ACTS.get(act_name)
            stats = _layer_stats(z if act is None else a, act, z.grad)[s_idx]
            n = len(s_idx)
            cols["seed"].append(self.seeds[s_idx])
            cols["step"].append(np.full(n, step))
            cols["layer"].append(np.full(n, self.net.names[depth], dtype=object))
            cols["depth"].append(np.full(n, depth))
            cols["activation"].append(np.full(n, act.name if act else "", dtype=object))
            for j, c in enumerate(LAYER_STATS):
                cols[c].append(stats[:, j])
        self._layers.append({k: np.concatenate(v) for k, v in cols.items()})

    def params(self) -> pd.DataFrame:
        return _frame(self._params, "params")

    def layers(self) -> pd.DataFrame:
        frame = _frame(self._layers, "layers", kind="Linear")
        return frame


# the layers table's columns, less "kind" (always Linear here), with the seed first
_LAYER_COLS = ("seed", *(c for c in LAYER_KEYS if c != "kind"), *LAYER_STATS)


def _frame(chunks: list[dict[str, np.ndarray]], table: str, **const: str) -> pd.DataFrame:
    if not chunks:
        from gradprobe.records import empty_frame

        return empty_frame(table).assign(seed=pd.Series([], dtype="int64"))
    cols = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    frame = pd.DataFrame(cols).assign(**const)
    return conform(frame, table)


def _moments(t: torch.Tensor) -> torch.Tensor:
    """Per seed (first dim): sum, sum of squares, max |x|, zeros, non-finite count; float64."""
    f = t.detach().reshape(t.shape[0], -1)
    d = f.double()
    return torch.stack(
        [
            d.sum(1),
            d.square().sum(1),
            f.abs().amax(1).double(),
            (f == 0).sum(1).double(),
            (~torch.isfinite(f)).sum(1).double(),
        ],
        1,
    )


def _sq(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).double().square().sum(1)


def _pe(h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ||x_b||^2 ||delta_b||^2 (squared per-example gradient RMS)."""
    x2 = h.detach().double().square().sum(-1)
    d2 = _grad(z).double().square().sum(-1)
    return (x2.expand_as(d2) * d2).mean(1)


def _layer_stats(out: torch.Tensor, act: Activation | None, grad: torch.Tensor) -> np.ndarray:
    """Per seed: mean, std, RMS, saturated and dead fraction of ``out``; ||dL/dz||.

    The moments are float64 sums on torch's side; :mod:`gradprobe.stats` makes the columns."""
    o = out.detach()
    flat = o.reshape(o.shape[0], -1).double()
    n = torch.full((flat.shape[0],), float(flat.shape[1]), dtype=torch.float64)
    nan = torch.full_like(n, math.nan)
    sat, dead = torch.zeros_like(n), nan
    if act is not None and act.family == S.SATURATING:
        sat = ((flat < act.low) | (flat > act.high)).sum(1).double()
    elif act is not None and act.family == S.RECTIFIER:
        dead = 1.0 - (o.amax(1) > 0).double().mean(1)
    bsq = grad.reshape(grad.shape[0], -1).double().square().sum(1)
    moments = torch.stack([flat.sum(1), flat.square().sum(1), n, sat, dead, bsq], 1).numpy()
    saturating = act is not None and act.family == S.SATURATING
    total, sumsq, count, n_sat, dead_frac, b_sumsq = moments.T
    cols = S.layer_columns(
        total, sumsq, count, n_sat, dead_frac, b_sumsq, np.full(len(moments), saturating)
    )
    return np.stack([cols[c] for c in LAYER_STATS], 1)
