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
    or None for any other module. See :func:`gradprobe.torch._activations.of_module`."""
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
    """The user's model inside DDP / DataParallel and ``torch.compile`` wrappers."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    while True:
        if isinstance(model, (DistributedDataParallel, DataParallel)):
            model = model.module
        elif (
            isinstance(getattr(model, "_orig_mod", None), nn.Module)
            and type(model).__name__ == "OptimizedModule"
        ):
            model = model._orig_mod
        else:
            return model


def trainable(
    model: nn.Module,
) -> tuple[list[tuple[str, str, torch.Tensor]], dict[nn.Module, str]]:
    """(layer path, param name, tensor) of each trainable parameter (shared ones once, empty ones
    skipped), and the layer path of every module that owns parameters, trainable or frozen."""
    params: list[tuple[str, str, torch.Tensor]] = []
    owners: dict[nn.Module, str] = {}
    seen: set[int] = set()
    for path, module in unwrap(model).named_modules():
        for pname, p in module.named_parameters(recurse=False):
            owners.setdefault(module, clean_path(path))
            if not p.requires_grad or id(p) in seen or p.numel() == 0:
                continue
            seen.add(id(p))
            params.append((clean_path(path), pname, p))
    return params, owners
