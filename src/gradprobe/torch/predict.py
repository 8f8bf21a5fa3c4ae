"""predict(model, inputs): the mean-field prediction for a real PyTorch MLP at initialisation.

Reads the model's Linear layers in registration order (their real widths), the activation module
between consecutive Linears, each layer's empirical weight and bias second moments, and the inputs'
second moment; then runs :func:`gradprobe.theory.predict_mlp`. Only scalars leave torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from gradprobe.errors import UsageError
from gradprobe.theory import MLPPrediction, predict_mlp
from gradprobe.theory.activations import LEAKY_SLOPE

_ACTIVATIONS: dict[type[nn.Module], str] = {
    nn.Sigmoid: "sigmoid",
    nn.Tanh: "tanh",
    nn.ReLU: "relu",
    nn.LeakyReLU: "leaky_relu",
    nn.ELU: "elu",
    nn.SELU: "selu",
    nn.GELU: "gelu",
    nn.SiLU: "silu",
    nn.Identity: "linear",
}
_NEUTRAL = (nn.Dropout, nn.Flatten)


@dataclass(frozen=True)
class _Layers:
    linears: list[nn.Linear]
    between: list[list[nn.Module]]  # leaf modules after linear i, before linear i + 1


def _scan(model: nn.Module) -> _Layers:
    linears: list[nn.Linear] = []
    between: list[list[nn.Module]] = []
    for module in model.modules():
        if next(module.children(), None) is not None:
            continue
        if isinstance(module, nn.Linear):
            linears.append(module)
            between.append([])
        elif linears and not isinstance(module, _NEUTRAL):
            between[-1].append(module)
    if len(linears) < 2:
        raise UsageError(
            f"predict needs an MLP with at least 2 nn.Linear layers, found {len(linears)} "
            f"in {type(model).__name__}"
        )
    return _Layers(linears, between[:-1])


def _activation_name(mods: list[nn.Module], given: str | None, i: int) -> str:
    if len(mods) == 1 and type(mods[0]) in _ACTIVATIONS:
        mod = mods[0]
        if isinstance(mod, nn.LeakyReLU) and mod.negative_slope != LEAKY_SLOPE:
            raise UsageError(f"LeakyReLU slope {mod.negative_slope}: only {LEAKY_SLOPE} is known")
        if isinstance(mod, nn.GELU) and mod.approximate != "none":
            return "gelu"  # the tanh approximation differs by < 1e-3
        return _ACTIVATIONS[type(mod)]
    if not mods and given is not None:
        return given
    found = ", ".join(type(m).__name__ for m in mods) or "none (a functional call?)"
    raise UsageError(
        f"cannot tell the activation after Linear layer {i + 1}: found {found}; expected one of "
        f"{', '.join(t.__name__ for t in _ACTIVATIONS)} -- pass activation='tanh' (for example)"
    )


def _second_moment(t: torch.Tensor | None) -> float:
    return 0.0 if t is None else float(t.detach().double().pow(2).mean())


def _input_moments(inputs: torch.Tensor, n0: int) -> tuple[float, float]:
    """mean_i E[x_i^2] and, over distinct pairs of examples, mean_i E[x_ai x_bi]."""
    x = torch.as_tensor(inputs).detach().double().reshape(len(inputs), -1)
    if x.shape[1] != n0:
        raise UsageError(f"inputs have {x.shape[1]} features, the first Linear expects {n0}")
    b = x.shape[0]
    a0 = float(x.pow(2).mean())
    if b < 2:
        return a0, 0.0
    total = x.sum(0)
    cross = (total.pow(2).sum() - x.pow(2).sum()) / (b * (b - 1) * n0)
    return a0, float(cross)


def predict(
    model: nn.Module,
    inputs: torch.Tensor | None = None,
    *,
    activation: str | Sequence[str] | None = None,
    batch_size: int | None = None,
) -> MLPPrediction:
    """Predict per-layer gradient norms of a PyTorch MLP from its actual weights and inputs.

    Widths come from the ``nn.Linear`` layers in registration order; sigma_w^2 = fan_in * E[W^2]
    and sigma_b^2 = E[b^2] are read from the weights; a^0 = mean E[x^2] (and, with ``batch_size``,
    the cross-example moment) from ``inputs`` (default: a^0 = 1). Activations are the
    ``nn.Sigmoid``/``nn.Tanh``/``nn.ReLU``/... modules between the Linears; when the model calls
    them functionally, give ``activation`` (one name, or one per hidden layer).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> net = nn.Sequential(nn.Linear(8, 64), nn.Sigmoid(), nn.Linear(64, 64), nn.Sigmoid(),
        ...                     nn.Linear(64, 1))
        >>> p = predict(net, torch.randn(256, 8))
        >>> p.widths, p.verdict.kind
        ((8, 64, 64, 1), 'vanishing')
    """
    layers = _scan(model)
    widths = [layers.linears[0].in_features] + [lin.out_features for lin in layers.linears]
    for i, (lin, nxt) in enumerate(zip(layers.linears, layers.linears[1:], strict=False)):
        if lin.out_features != nxt.in_features:
            raise UsageError(
                f"Linear {i + 1} outputs {lin.out_features}, Linear {i + 2} expects "
                f"{nxt.in_features}: not a plain MLP"
            )
    if activation is None or isinstance(activation, str):
        acts = [_activation_name(m, activation, i) for i, m in enumerate(layers.between)]
    else:
        acts = list(activation)
    sw2 = [lin.in_features * _second_moment(lin.weight) for lin in layers.linears]
    sb2 = [_second_moment(lin.bias) for lin in layers.linears]
    a0, cross = (1.0, 0.0) if inputs is None else _input_moments(inputs, widths[0])
    return predict_mlp(
        widths,
        acts,
        init=None,
        weight_var=sw2,
        bias_var=sb2,
        input_second_moment=a0,
        batch_size=batch_size,
        input_cross_moment=cross,
    )
