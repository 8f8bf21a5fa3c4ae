"""What a model is made of, as gradprobe sees it: pure functions on modules and outputs.

- :func:`primary_tensor`: the floating tensor a module "outputs" (LSTM, attention and Hugging Face
  blocks return tuples, dicts or packed sequences).
- :func:`activation_of`: the nonlinearity an activation module computes (torch.nn and Hugging Face).
- :func:`is_convolution`: whether units are channels (dim 1) rather than the last dimension.
- :func:`trainable` and :func:`clean_path`: the layers and parameters of a model, under the paths
  the user wrote (parametrizations folded into their layer, wrapper prefixes removed).

No monitor state lives here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd
from torch.nn.utils import parametrize
from torch.nn.utils.rnn import PackedSequence

from gradprobe.torch._activations import Activation, of_module

ROOT = "(root)"  # the layer path of parameters the model itself owns

# module attributes that wrappers insert into paths: FSDP1, activation checkpointing, torch.compile
WRAPPER_SEGMENTS = frozenset({"_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod"})


def primary_tensor(output: Any) -> torch.Tensor | None:
    """The floating tensor a module outputs, or None.

    A floating tensor itself; a ``PackedSequence``'s ``.data``; in a tuple or list the first
    floating tensor found depth first; in a dict (a Hugging Face ``ModelOutput`` too) the first in
    value order. Tensors of at least one dimension win over 0-d ones (a ``loss`` before ``logits``).
    """
    found = _first(output, want_dims=True)
    return found if found is not None else _first(output, want_dims=False)


def _first(output: Any, want_dims: bool) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        if output.is_floating_point() and (output.ndim > 0 or not want_dims):
            return output
        return None
    if isinstance(output, PackedSequence):
        return _first(output.data, want_dims)
    if isinstance(output, Mapping):
        items: Any = output.values()
    elif isinstance(output, (tuple, list)):
        items = output
    else:
        return None
    for item in items:
        found = _first(item, want_dims)
        if found is not None:
            return found
    return None


def activation_of(module: nn.Module) -> Activation | None:
    """The activation an activation module computes (``nn.ReLU()``, HF ``NewGELUActivation()``...),
    or None for any other module (HF's ``LinearActivation``, the identity, included).

    See :func:`gradprobe.torch._activations.of_module`; functional calls:
    :func:`gradprobe.torch._activations.of_call`.
    """
    return of_module(module)


def is_convolution(module: nn.Module) -> bool:
    """True for ``nn.Conv1d/2d/3d`` and their transposed and lazy forms (units are channels).

    Hugging Face's ``Conv1D`` is a linear layer (units on the last dimension): False.
    """
    return isinstance(module, _ConvNd)


def clean_path(path: str) -> str:
    """A module path without the segments wrappers insert (``_fsdp_wrapped_module``,
    ``_checkpoint_wrapped_module``, ``_orig_mod``); ``"(root)"`` for the model itself.

    DDP's leading ``module.`` is not removed here (a user's child may be called ``module``):
    :func:`trainable` unwraps a DDP model before it walks it.
    """
    kept = [s for s in path.split(".") if s and s not in WRAPPER_SEGMENTS]
    return ".".join(kept) or ROOT


def unwrap(model: nn.Module) -> nn.Module:
    """The user's model inside DDP / DataParallel and ``torch.compile`` wrappers (any nesting)."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    while True:
        if isinstance(model, (DistributedDataParallel, DataParallel)):
            inner = model.module
        elif type(model).__name__ == "OptimizedModule":  # torch.compile(model)
            inner = getattr(model, "_orig_mod", None)
        else:
            return model
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def kind(module: nn.Module) -> str:
    """The class name the user wrote: ``Linear`` also for a parametrized Linear
    (``ParametrizedLinear``) or one sharded by FSDP2's ``fully_shard`` (``FSDPLinear``)."""
    cls = type(module)
    while True:
        for base in cls.__bases__:
            if cls.__name__ in ("Parametrized" + base.__name__, "FSDP" + base.__name__):
                cls = base
                break
        else:
            return cls.__name__


def trainable(
    model: nn.Module,
) -> tuple[list[tuple[str, str, torch.Tensor]], dict[nn.Module, str]]:
    """What there is to watch in a model.

    Returns ``(params, owners)``: ``params`` lists ``(layer path, param name, tensor)`` for each
    trainable parameter (``requires_grad``, ``numel() > 0``, a shared one once, where first
    met), in the order of ``named_modules`` -- under FSDP1 empty ones too (the local shard of
    a parameter another rank holds); ``owners`` maps every module that owns parameters,
    trainable or frozen, to its layer path (frozen layers still show their backward signal).

    - Paths are :func:`clean_path`'d; a DDP / DataParallel / ``torch.compile`` wrapper passed as
      the model is unwrapped first, so its ``module.`` / ``_orig_mod.`` never shows.
    - A parametrized tensor (``torch.nn.utils.parametrize``: ``weight_norm``, ``orthogonal``,
      ``spectral_norm``, your own) is reported under the layer that owns it, before the layer's
      plain parameters: ``weight`` for its one ``original``, ``weight.original0`` /
      ``weight.original1`` for several, ``weight.<i>.<name>`` for a parameter of the
      parametrization itself. ``ParametrizationList`` modules are never owners; the
      parametrized layer is one even when all its parameters are parametrized.
    """
    params: list[tuple[str, str, torch.Tensor]] = []
    owners: dict[nn.Module, str] = {}
    seen: set[int] = set()
    inner: set[int] = set()  # modules inside some layer's .parametrizations
    root = unwrap(model)
    # FSDP1 (use_orig_params): a rank holding no shard of a parameter sees it with numel 0;
    # every rank must still list it, or the ranks disagree on the rows
    keep_empty = any(type(m).__name__ == "FullyShardedDataParallel" for m in root.modules())
    for path, module in root.named_modules():
        if id(module) in inner:
            continue
        layer = clean_path(path)
        found = _parametrized(module, inner)
        found += list(module.named_parameters(recurse=False))
        for pname, p in found:
            owners.setdefault(module, layer)
            if not p.requires_grad or id(p) in seen or (p.numel() == 0 and not keep_empty):
                continue
            seen.add(id(p))
            params.append((layer, pname, p))
    return params, owners


def _parametrized(module: nn.Module, inner: set[int]) -> list[tuple[str, nn.Parameter]]:
    """The parameters behind a module's parametrized tensors, under the tensor's name; the
    modules holding them are added to ``inner``."""
    plists = getattr(module, "parametrizations", None)
    if not isinstance(plists, nn.ModuleDict) or not parametrize.is_parametrized(module):
        return []
    inner.update(id(m) for m in plists.modules())
    found = []
    for tensor_name, plist in plists.items():
        for sub, p in plist.named_parameters():
            if sub == "original":
                found.append((tensor_name, p))
            else:
                found.append((f"{tensor_name}.{sub}", p))
    return found
