"""Thin wrappers that capture a Keras model's activations, backward signal and gradients.

Capture is done by replacing attributes on *instances* (never on classes), and every replacement
is undone by :meth:`Patches.restore`:

- ``layer.call`` of each layer that owns weights: marks which layer runs (forward order gives the
  depth), keeps the input's per-example norms (Dense, ``per_example``) and, for layers without
  an activation of their own, the output (measured unless an activation layer follows);
- ``layer.activation`` (Dense, Conv, ...): the pre-activation ``z`` passes through an identity
  whose custom gradient sees ``dL/dz``, and the activation's output is measured;
- ``call`` of standalone activation layers (``Activation``, ``ReLU``...): their output is the
  activation of the layer before;
- ``optimizer.apply``: receives the gradients the train step computed (see ``monitor.py``).

Each wrapper checks one Python flag, :attr:`Tracer.armed`; unarmed it only calls the original, so
a step traced unarmed is the same graph as an unwatched one. Armed, the wrappers keep in
:class:`LayerAcc` the activation outputs (reduced all together at the step's end, so tensors of
one shape cost one op per statistic) and reduce the backward signal at once with backend ops
(:mod:`gradprobe.keras._reduce`), until the optimizer wrapper packs them. This module never
imports TensorFlow or torch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from keras import ops

from gradprobe.keras import _reduce as R
from gradprobe.keras._activations import Activation, of_function, of_layer


@dataclass
class Patches:
    """Attribute replacements on instances, undone in reverse order."""

    _undo: list[tuple[Any, str, bool, Any]] = field(default_factory=list)

    def set(self, obj: Any, attr: str, value: Any) -> None:
        own = attr in vars(obj)
        self._undo.append((obj, attr, own, vars(obj).get(attr)))
        setattr(obj, attr, value)

    def restore(self) -> None:
        while self._undo:
            obj, attr, own, old = self._undo.pop()
            if own:
                setattr(obj, attr, old)
            else:
                delattr(obj, attr)

    def __len__(self) -> int:
        return len(self._undo)


@dataclass
class LayerAcc:
    """What one armed step gathered for one layer (tensors of the step's graph, or eager)."""

    act: Activation | None = None
    outs: list[tuple[Any, Activation | None]] = field(default_factory=list)  # to be reduced
    bwd_sq: list[Any] = field(default_factory=list)  # ||dL/dh||^2 (reduced on the device)
    bwd: list[Any] = field(default_factory=list)  # dL/dh itself (raw: reduced on the host)
    x_rows: list[Any] = field(default_factory=list)
    d_rows: list[Any] = field(default_factory=list)
    pending: Any = None  # output waiting to see whether an activation layer follows


def walk(layer: Any) -> Iterator[Any]:
    """Every layer below ``layer`` reachable through the public ``.layers`` of models."""
    for sub in getattr(layer, "layers", None) or []:
        yield sub
        yield from walk(sub)


def is_container(layer: Any) -> bool:
    return bool(getattr(layer, "layers", None))


def strip_root(path: str, root: str) -> str:
    """A variable or layer path without the model's own name in front."""
    head, _, rest = path.partition("/")
    return rest if head == root and rest else path


def layer_of(variable: Any, root: str) -> tuple[str, str]:
    """(layer path, parameter name) of a Keras variable, from ``variable.path``."""
    path = strip_root(str(getattr(variable, "path", variable.name)), root)
    layer, _, param = path.rpartition("/")
    return (layer or "(root)"), param


class Tracer:
    """Installs the layer wrappers and gathers, per armed step, each layer's tensors."""

    def __init__(self, *, activations: bool, backward: bool, per_example: bool) -> None:
        self.activations, self.backward, self.per_example = activations, backward, per_example
        self.armed = False
        self.raw = False  # keep dL/dh whole for the host (see gradprobe.keras._host)
        self.accs: dict[str, LayerAcc] = {}
        self.order: dict[str, int] = {}  # layer -> depth, in order of first forward call
        self.kinds: dict[str, str] = {}
        self.acts: dict[str, Activation] = {}  # layer -> the activation seen after it
        self.patches = Patches()
        self._last: str | None = None

    # ------------------------------------------------------------ install
    def install(self, model: Any) -> list[str]:
        """Wrap the model's layers; returns the paths of the layers that own weights."""
        names = []
        for layer in walk(model):
            if is_container(layer):
                continue
            if layer.weights:
                name = layer_of(layer.weights[0], model.name)[0]
                self.kinds[name] = type(layer).__name__
                names.append(name)
                self._wrap_param_layer(name, layer)
            elif self.activations and of_layer(layer) is not None:
                self._wrap_activation_layer(layer, of_layer(layer))
        return names

    def _wrap_param_layer(self, name: str, layer: Any) -> None:
        act = of_function(getattr(layer, "activation", None))
        own_act = act is not None and callable(getattr(layer, "activation", None))
        if act is not None and own_act:
            self.patches.set(layer, "activation", self._activation(name, layer.activation, act))
        dense = type(layer).__name__ == "Dense"
        self.patches.set(layer, "call", self._call(name, layer.call, own_act, dense))

    def _call(self, name: str, call: Callable, own_act: bool, dense: bool) -> Callable:
        ident = self._identity(name)

        @functools.wraps(call)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if not self.armed:
                return call(*args, **kwargs)
            self._enter(name)
            x = args[0] if args else next(iter(kwargs.values()), None)
            if self.per_example and dense and _rank(x) == 2:
                self.acc(name).x_rows.append(R.row_sq_norms(x))
            out = call(*args, **kwargs)
            if own_act or not _is_float_tensor(out):
                return out
            out = ident(out)
            if self.activations:
                self.acc(name).pending = out
            return out

        return wrapped

    def _activation(self, name: str, fn: Callable, act: Activation) -> Callable:
        ident = self._identity(name)

        @functools.wraps(fn)
        def activation(z: Any) -> Any:
            if not self.armed:
                return fn(z)
            a = fn(ident(z))
            if self.activations:
                self.measure(name, a, act)
            return a

        return activation

    def _wrap_activation_layer(self, layer: Any, act: Activation | None) -> None:
        call = layer.call

        @functools.wraps(call)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            out = call(*args, **kwargs)
            if self.armed and self._last is not None:
                acc = self.accs.get(self._last)
                if acc is not None and acc.pending is not None:
                    acc.pending = None  # a second activation after the same layer: first counts
                    self.measure(self._last, out, act)
            return out

        self.patches.set(layer, "call", wrapped)

    def _identity(self, name: str) -> Callable:
        """Identity whose gradient hands ``dL/dh`` at this layer's output to :meth:`_backward`."""

        @ops.custom_gradient
        def identity(h: Any) -> Any:
            def grad(*args: Any, upstream: Any = None) -> Any:
                if upstream is None:
                    (upstream,) = args
                self._backward(name, upstream)
                return upstream

            return h, grad

        def apply(h: Any) -> Any:
            return identity(h) if (self.backward or self.per_example) else h

        return apply

    # ------------------------------------------------------------ gathering
    def acc(self, name: str) -> LayerAcc:
        if name not in self.accs:
            self.accs[name] = LayerAcc()
        return self.accs[name]

    def depth(self, name: str) -> int:
        if name not in self.order:
            self.order[name] = len(self.order)
        return self.order[name]

    def _enter(self, name: str) -> None:
        self.depth(name)
        self.resolve_pending()
        self._last = name

    def resolve_pending(self) -> None:
        """The last layer's output had no activation after it: measure the output itself."""
        acc = self.accs.get(self._last) if self._last is not None else None
        if acc is not None and acc.pending is not None:
            out, acc.pending = acc.pending, None
            self.measure(self._last or "", out, None)

    def measure(self, name: str, out: Any, act: Activation | None) -> None:
        acc = self.acc(name)
        if act is not None and acc.act is None:
            acc.act = act
            self.acts.setdefault(name, act)
        acc.outs.append((out, act))  # reduced with the other layers' outputs at the step's end

    def _backward(self, name: str, g: Any) -> None:
        acc = self.acc(name)
        if self.backward:
            if self.raw:
                acc.bwd.append(g)
            else:
                acc.bwd_sq.append(R.sq_norm(g))
        if self.per_example and acc.x_rows and _rank(g) == 2:
            acc.d_rows.append(R.row_sq_norms(g))

    def take(self) -> dict[str, LayerAcc]:
        """The step's gatherings (pending outputs measured); the tracer starts afresh."""
        self.resolve_pending()
        accs, self.accs, self._last = self.accs, {}, None
        return accs

    @staticmethod
    def reduce_raw(accs: dict[str, LayerAcc]) -> dict[str, LayerAcc]:
        """The raw backward signals of ``accs`` reduced on the device (``bwd`` -> ``bwd_sq``)."""
        for acc in accs.values():
            acc.bwd_sq += [R.sq_norm(g) for g in acc.bwd]
            acc.bwd = []
        return accs

    def reset(self) -> None:
        self.accs, self._last = {}, None


def _rank(x: Any) -> int:
    shape = getattr(x, "shape", None)
    return len(shape) if shape is not None else -1


def _is_float_tensor(x: Any) -> bool:
    dtype = str(getattr(x, "dtype", ""))
    return _rank(x) >= 1 and "float" in dtype
