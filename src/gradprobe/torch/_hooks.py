"""Arming and hooks: what the monitor attaches to a model, its optimizer and a GradScaler.

- :class:`Capture`: forward hooks on every layer that owns parameters and on activation modules,
  a torch-function mode for functional activations, and a tensor hook on each layer output for
  the backward signal. Armed only for recorded steps; forwards under ``no_grad`` or
  ``inference_mode`` hold nothing. Captures go to a :class:`gradprobe.torch._step.StepLayers`.
- :class:`StepHooks`: the optimizer's step pre- and post-hooks. A closure passed to
  ``step(closure)`` is replaced by a wrapper that reads the gradients right after the closure's
  *first* call, the gradients the step applies (for LBFGS: the gradient at the step's starting
  point).
- :class:`ScalerPatch`: ``GradScaler.step`` of one scaler instance, wrapped to learn that a step
  was skipped (the scaler found inf/NaN and never called ``optimizer.step``).

Every handle is removed by ``remove()``; after it the objects behave as before.

Under ``torch.compile`` (a model compiled before :func:`gradprobe.watch`, or whose hooks dynamo
traces) the hooks stay registered and are gated on :attr:`Capture.on` (dynamo guards on it:
``every=N`` costs one more graph, compiled once); inside the compiled region they call only
:mod:`gradprobe.torch._compiled` (no graph break): a layer's output goes through a signal probe
whose backward adds ``||dL/dh||^2`` to a small leaf, and its statistics are appended to a list
that :meth:`Capture.take_compiled` folds at the step.
"""

from __future__ import annotations

import math
import sys
import types
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.hooks import RemovableHandle

from gradprobe.torch import _compiled as C
from gradprobe.torch import _native as N
from gradprobe.torch import _reduce as R
from gradprobe.torch._activations import FUNCTIONS, Activation
from gradprobe.torch._step import DepthOrder, Forward, LayerAcc, StepLayers
from gradprobe.torch._structure import activation_of, is_convolution, primary_tensor


class _FunctionalActivations(TorchFunctionMode):
    """Sees functional activations (``F.relu(x)``, ``x.sigmoid()``) during a recorded forward."""

    def __init__(self, capture: Capture) -> None:
        super().__init__()
        self.capture = capture

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def,unused-ignore]
        out = func(*args, **(kwargs or {}))
        act = FUNCTIONS.get(func)
        if act is not None:
            self.capture.on_functional(act, out)
        return out


class Capture:
    """Forward and backward hooks of one model, feeding a :class:`StepLayers`."""

    def __init__(
        self,
        model: nn.Module,
        owners: dict[nn.Module, str],
        layers: StepLayers,
        order: DepthOrder,
        reducer: R.Reducer,
        *,
        activations: bool,
        backward: bool,
        per_example: bool,
    ) -> None:
        self.model, self.layers, self.order, self.reducer = model, layers, order, reducer
        self.grads_gone: Callable[[], bool] = lambda: False  # set by the monitor
        self.activations, self.backward, self.per_example = activations, backward, per_example
        self.set_owners(owners)
        self._armed: list[RemovableHandle] = []
        # hooks taken out of the modules' hook dicts while disarmed, put back by the next arm
        # (registering them again took 70 us on a 10-layer MLP: a RemovableHandle each)
        self._parked: list[tuple[dict, int, Any]] = []
        self._parked_handles: list[RemovableHandle] = []
        self._parked_key: bool | None = None  # the `counted` they were registered with
        self._last: str | None = None
        self._live: bool | None = None  # inside the model's forward: whether grad is enabled
        self._in_act_module = 0
        self._functional: bool | None = None  # None: not known yet; found on the first forward
        self._mode: _FunctionalActivations | None = None
        self.eager = False  # True once a model changed a kept output in place
        # under torch.compile: hooks stay registered, gated on `on`; whatever a traced hook reads
        # is the same at each entry of the model (`_cpending`/`_clast` None, `_found` empty,
        # `_sink` None on a step's first forward, a tensor of one shape on the later ones)
        self.on = True
        self.sticky = False  # hooks stay registered while watching (a compiled model)
        self._cmode = _FunctionalActivations(self)  # one instance for the monitor's life
        self._cmode_on = False
        self._cpending: torch.Tensor | None = None
        self._clast: str | None = None
        self._found: list[tuple[str, Activation | None, torch.Tensor]] = []  # this forward's
        self._sink: torch.Tensor | None = None  # the step's forwards' vectors, summed
        self._layout: tuple[tuple[str, Activation | None, int], ...] = ()  # what _sink holds
        self._spilled: list[tuple[tuple[tuple[str, Activation | None, int], ...], Any]] = []
        self._names: list[str] = []  # layers in the order this forward ran them
        self._ran: tuple[str, ...] = ()  # ... and in the last compiled forward (depth order)

    def set_owners(self, owners: dict[nn.Module, str]) -> None:
        """The layers to hook (again after a re-scan of the model)."""
        self.owners = owners
        self.conv = {name for m, name in owners.items() if is_convolution(m)}
        acts = ((m, activation_of(m)) for m in self.model.modules())
        self.act_modules = {m: a for m, a in acts if a is not None}
        self.probes = {name: C.new_probe(_device(m)) for m, name in owners.items()}

    @property
    def armed(self) -> bool:
        return bool(self._armed)

    def wanted(self) -> bool:
        """Whether module hooks have anything to do (gradients only: just learning the order)."""
        return self.activations or self.backward or self.per_example or not self.order.pos

    # ------------------------------------------------------------------ arming
    def arm(self) -> None:
        self.on = True
        if self._armed or not self.wanted():
            return
        counted = self.activations and self._functional is not False
        if self._parked_handles and self._parked_key == counted:
            for hooks, key, fn in self._parked:  # after any hook added since: as if re-added
                hooks[key] = fn
            self._armed, self._parked_handles, self._parked = self._parked_handles, [], []
            return
        self._unpark()
        self._parked_key = counted
        add = self._armed.append
        for module, name in self.owners.items():
            add(module.register_forward_hook(partial(self._on_layer, name)))
        if self.activations:
            # the pre-hooks only tell functional calls inside nn.ReLU & co from the user's own
            for module, act in self.act_modules.items():
                if counted:
                    add(module.register_forward_pre_hook(self._enter_act_module))
                add(module.register_forward_hook(partial(self._on_act_module, act, counted)))
        inner = getattr(self.model, "_orig_mod", self.model)  # torch.compile's wrapper
        add(inner.register_forward_pre_hook(partial(self._begin, counted)))
        add(inner.register_forward_hook(self._end, always_call=True))

    def disarm(self) -> None:
        """Steps that are not recorded: hooks removed (eager), or gated off (compiled)."""
        if self.sticky:
            self.on = False
            self.drop()
            return
        self._park()

    def _park(self) -> None:
        """Take the hooks out of the modules' hook dicts (the modules then run their fast
        path, as with no hook at all), keeping them for the next :meth:`arm`."""
        self._reset()
        parked: list[tuple[dict, int, Any]] = []
        for h in self._armed:
            hooks = h.hooks_dict_ref()
            if hooks is not None and h.id in hooks:
                parked.append((hooks, h.id, hooks.pop(h.id)))
        self._unpark()
        self._parked, self._parked_handles, self._armed = parked, self._armed, []

    def _unpark(self) -> None:
        for h in self._parked_handles:
            h.remove()  # (its entries in other dicts: always_call)
        self._parked_handles, self._parked = [], []

    def remove(self) -> None:
        """Every hook removed. A compiled graph that traced them sees ``on`` False and is
        traced again, bare."""
        self.sticky = False
        self._reset()
        for h in self._armed:
            h.remove()
        self._armed.clear()
        self._unpark()

    def _reset(self) -> None:
        self.on = False
        self.drop()
        self._pop_mode()
        self._last, self._live, self._in_act_module = None, None, 0

    # ------------------------------------------------------- the model's forward
    def _begin(self, counted: bool, module: nn.Module, inputs: tuple) -> None:
        if torch.compiler.is_compiling():
            if self.on:
                self.sticky = True  # traced: the hooks must stay registered from now on
                if counted and torch.is_grad_enabled() and not self._cmode_on:
                    self._cmode.__enter__()
                    self._cmode_on = True
            return
        self._live = torch.is_grad_enabled()
        self._last = None
        if self._live:
            self.layers.begin()
            if self.layers.done and self.grads_gone():
                # gradients zeroed since those forwards, with no step recorded: their step
                # never happened (a loss scaler skipped it); they do not belong to the next one
                self.layers.done = {}
            if counted and self._mode is None:
                self._mode = _FunctionalActivations(self)
                self._mode.__enter__()

    def _end(self, module: nn.Module, inputs: tuple, output: Any) -> None:
        if torch.compiler.is_compiling():
            if self.on:
                self._c_resolve()
                self._clast = None
                self._c_fold_forward()
                if self._cmode_on:
                    self._cmode.__exit__(None, None, None)
                    self._cmode_on = False
            return
        if self._live:
            self._resolve_pending()
        self._last, self._live = None, None
        if self._pop_mode() and self._functional is None and not self.sticky:
            self._functional = False
            # no functional activation in this model: stop intercepting torch calls
            self.disarm()
            self.arm()
        elif not (self.activations or self.backward or self.per_example):
            self.disarm()  # gradients only: the layer hooks were there to learn the depth order

    def end_pending(self) -> None:
        """Measure an output still waiting for an activation (a model whose own forward is
        not called, so no end-of-forward hook ran); called before the step reads."""
        self._resolve_pending()
        self._last = None

    def _pop_mode(self) -> bool:
        if self._mode is None:
            return False
        self._mode.__exit__(None, None, None)
        self._mode = None
        return True

    # ------------------------------------------------------------ layer outputs
    def _on_layer(self, name: str, module: nn.Module, inputs: tuple, output: Any) -> Any:
        if torch.compiler.is_compiling():
            return self._c_layer(name, output) if self.on else None
        if not self.on:
            return None
        self.order.see(name)
        live = self._live
        if not (torch.is_grad_enabled() if live is None else live):
            return
        fwd = self.layers.forward()
        self._resolve_pending()
        self._last = name
        if isinstance(output, torch.Tensor):
            out = output if output.is_floating_point() else None
        else:
            out = primary_tensor(output)
        if out is None:
            return
        acc = fwd.layer(name)
        if self.activations:
            acc.pending = out
        if out.requires_grad:  # also tells that a backward reached this forward
            out.register_hook(partial(self._on_backward, fwd, acc))
        if self.per_example and isinstance(module, nn.Linear) and out.ndim == 2:
            acc.x_rows.append(R.row_sq_norms(inputs[0]))

    def _resolve_pending(self) -> None:
        """The previous layer's output had no activation after it: measure the output itself."""
        if self._last is None or self.layers.current is None:
            return
        acc = self.layers.current.layers.get(self._last)
        if acc is not None and acc.pending is not None:
            self._measure(acc, acc.pending, None)
            acc.pending = None

    def _measure(self, acc: LayerAcc, out: torch.Tensor, act: Activation | None) -> None:
        """Reduce a CPU output now (still in cache); keep a small one for the step's batched
        reduction; reduce a large one now."""
        acc.unit_dim = 1 if out.ndim > 2 and self._last in self.conv else -1
        now = self.reducer.output_now(out, act, acc.unit_dim)
        if now is not None:
            acc.add_output(*now)
            return
        out = out.detach()
        if out.numel() <= R.DEFER and not self.eager:
            acc.outs.append((out, out._version))
        else:
            acc.parts.append(self.reducer.output_stats([out], act, acc.unit_dim))

    # -------------------------------------------------------------- activations
    def _on_activation(self, act: Activation, out: Any) -> None:
        if torch.compiler.is_compiling():
            pending, last = self._cpending, self._clast
            if pending is not None and last is not None and isinstance(out, torch.Tensor):
                self._cpending = None
                self._c_measure(last, act, out)
            return
        fwd = self.layers.current
        if self._last is None or fwd is None or not isinstance(out, torch.Tensor):
            return
        acc = fwd.layers.get(self._last)
        if acc is None or acc.pending is None:
            return  # a second activation after the same layer: the first one counts
        acc.pending = None
        if acc.act is None:
            acc.act = act
        self._measure(acc, out, act)

    def _enter_act_module(self, module: nn.Module, inputs: tuple) -> None:
        if self.on:
            self._in_act_module += 1

    def _on_act_module(
        self, act: Activation, counted: bool, module: nn.Module, inputs: tuple, out: Any
    ) -> None:
        if not self.on:
            return
        if counted:
            self._in_act_module -= 1
        if self._last is not None or self._clast is not None:  # a captured layer ran before
            self._on_activation(act, out)

    def on_functional(self, act: Activation, out: Any) -> None:
        if self._in_act_module:
            return  # inside an activation module (a tanh inside a GELU): the module names it
        if not torch.compiler.is_compiling():
            self._functional = True
        self._on_activation(act, out)

    # ----------------------------------------------------------- under compile
    def _c_layer(self, name: str, output: Any) -> Any:
        """A layer's forward hook inside a compiled region: the output, through the signal
        probe (returned: the module's output is the probe's), waits for its activation."""
        self._names.append(name)
        if not torch.is_grad_enabled():
            return None
        self._c_resolve()
        self._clast = name
        out: torch.Tensor | None
        ret: torch.Tensor | None = None
        if isinstance(output, torch.Tensor):
            if not output.is_floating_point():
                return None
            out = output
            if self.backward and out.requires_grad:
                out = ret = C.signal_probe(out, self.probes[name])
        else:
            out = primary_tensor(output)  # tuple/dict outputs: no backward probe
        if self.activations and out is not None:
            self._cpending = out
        return ret

    def _c_resolve(self) -> None:
        if self._cpending is not None and self._clast is not None:
            self._c_measure(self._clast, None, self._cpending)
        self._cpending = None

    def _c_measure(self, name: str, act: Activation | None, out: torch.Tensor) -> None:
        low, high = -math.inf, math.inf
        if act is not None and act.family == "saturating":
            low, high = act.low, act.high
        unit = None
        if act is not None and act.family == "rectifier" and out.ndim >= 2:
            unit = 1 if out.ndim > 2 and name in self.conv else -1
        self._found.append((name, act, C.layer_stats(out, low, high, unit)))

    def _c_fold_forward(self) -> None:
        """End of a compiled forward: its vectors are added to the step's ``_sink`` (one tensor)
        and ``_found`` is emptied, so that the next forward of the step (gradient accumulation)
        enters with the same state and runs the same graph. A forward whose layout differs
        (another code path) puts the sum so far aside."""
        if self._names:
            self._ran = tuple(self._names)
            self._names.clear()
        found = self._found
        if not found:
            return
        flat = torch.cat([v for _, _, v in found])
        layout = tuple((name, act, v.shape[0]) for name, act, v in found)
        sink = self._sink
        if sink is not None and sink.shape == flat.shape:
            self._sink = sink + flat
        else:
            if sink is not None:
                self._spilled.append((self._layout, sink))
            self._sink = flat
        self._layout = layout
        found.clear()

    def take_compiled(self, layers: dict[str, LayerAcc]) -> None:
        """Add what compiled forwards and backwards gathered since the last step to ``layers``
        (the step's per-layer accumulators): output moments, units alive and ``||dL/dh||``, left
        on the device: they cross to the host with the step's other numbers."""
        if (
            not (self._ran or self._names or self._found or self._spilled or self._sink is not None)
            and not _dynamo_compiled()
        ):
            return  # no compiled forward ever ran here: nothing to take
        self._c_fold_forward()  # a forward that did not reach its end hook
        for name in self._ran:
            self.order.see(name)
        packs = list(self._spilled)
        if self._sink is not None:
            packs.append((self._layout, self._sink))
        self._spilled.clear()
        self._sink, self._layout = None, ()
        for layout, sink in packs:
            at = 0
            for name, act, size in layout:
                v, at = sink[at : at + size].detach(), at + size
                self.order.see(name)
                acc = layers.get(name)
                if acc is None:
                    acc = layers[name] = LayerAcc()
                if acc.act is None:
                    acc.act = act
                alive = (v[C.HEAD :] > 0)[None] if size > C.HEAD else None
                acc.parts.append((v[: C.HEAD][None], alive))  # read with the step's numbers
        for name, p in self.probes.items():
            if p.grad is None:
                continue
            acc = layers.get(name)
            if acc is None:
                acc = layers[name] = LayerAcc()
            acc.gnorms.append(p.grad.detach().reshape(1).sqrt())  # ||dL/dh||, on the device
            p.grad = None

    def drop(self) -> None:
        """Forget what compiled forwards and backwards gathered (no step recorded them)."""
        if (
            not (self._names or self._found or self._spilled or self._sink is not None)
            and not _dynamo_compiled()
        ):
            return  # no compiled forward ever ran: no probe has a gradient
        self._found.clear()
        self._names.clear()
        self._spilled.clear()
        self._sink, self._layout = None, ()
        for p in self.probes.values():
            p.grad = None

    # ----------------------------------------------------------------- backward
    def _on_backward(self, fwd: Forward, acc: LayerAcc, grad: torch.Tensor) -> None:
        fwd.backed = True
        if self.backward:
            sq = self.reducer.sq_norm_now(grad)
            if sq is not None:  # a CPU tensor, read while still in cache
                acc.add_bsq(sq)
            elif grad.numel() <= R.DEFER:
                acc.grads.append(grad)
            else:
                acc.gnorms.append(R.norms(self.reducer, [grad]))
        if self.per_example and acc.x_rows and grad.ndim == 2:
            acc.d_rows.append(R.row_sq_norms(grad))


def _device(module: nn.Module) -> torch.device:
    p = next(module.parameters(recurse=False), None)
    return p.device if p is not None else torch.device("cpu")


def _dynamo_compiled() -> bool:
    """Whether dynamo has compiled code in this process (since its last reset): until it has,
    no compiled forward ran and no signal probe has a gradient."""
    frames = sys.modules.get("torch._dynamo.convert_frame")
    return frames is not None and len(frames.input_codes.seen) > 0


class StepSink(Protocol):
    """What the optimizer hooks report to."""

    def before_update(self, optimizer: torch.optim.Optimizer) -> None: ...

    def after_update(self, optimizer: torch.optim.Optimizer) -> None: ...


class StepHooks:
    """The optimizer's step pre/post hooks; closures are wrapped to read after their first call.

    ``completed`` counts the post-hooks seen (a step the optimizer really ran). With the C
    extension built, the hooks torch calls are a :class:`gradprobe._fused.Ticker`'s: on the
    steps the sink declares quiet (``ticker.quiet_until``: they record nothing, nor does the
    next one) they count the step and log its clock reading without running Python; the sink
    takes the log (``ticker.take()``) when its own hooks next run. ``clock`` is the Ticker's
    clock code (0: the thread's CPU time, 1: monotonic, 2: none; None: no Ticker).
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, sink: StepSink, clock: int | None = None
    ) -> None:
        self.optimizer, self.sink = optimizer, sink
        self._completed = 0
        self.ticker: Any = None
        pre: Callable[..., Any] = self._pre
        post: Callable[..., Any] = self._post
        if clock is not None and N.available():
            self.ticker = N._fused.Ticker(self._pre, self._post, clock)
            pre, post = self.ticker.pre_hook, self.ticker.post_hook
        self._handles = [
            optimizer.register_step_pre_hook(pre),
            optimizer.register_step_post_hook(post),
        ]

    @property
    def completed(self) -> int:
        return self.ticker.completed if self.ticker is not None else self._completed

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _pre(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> Any:
        if kwargs and kwargs.get("closure") is not None:
            kwargs = {**kwargs, "closure": self._wrap(optimizer, kwargs["closure"])}
            return args, kwargs
        # args[0] is the optimizer itself (the hooks see step's bound arguments)
        if len(args) > 1 and callable(args[1]):
            return (args[0], self._wrap(optimizer, args[1]), *args[2:]), kwargs
        self.sink.before_update(optimizer)
        return None

    def _wrap(self, optimizer: torch.optim.Optimizer, closure: Callable[[], Any]) -> Callable:
        first = True

        def closure_then_read() -> Any:
            nonlocal first
            loss = closure()
            if first:  # the gradients at the step's starting point: the ones it applies
                first = False
                self.sink.before_update(optimizer)
            return loss

        return closure_then_read

    def _post(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        if self.ticker is None:  # (a Ticker counts the steps itself)
            self._completed += 1
        self.sink.after_update(optimizer)


class ScalerPatch:
    """Wraps ``scaler.step`` of one GradScaler instance: when it returns without the optimizer's
    post-hook having run (inf/NaN found, step skipped), ``on_skip(optimizer)`` is called."""

    def __init__(
        self,
        scaler: Any,
        hooks: StepHooks,
        on_skip: Callable[[torch.optim.Optimizer], None],
    ) -> None:
        self.scaler, self.hooks, self.on_skip = scaler, hooks, on_skip
        self._original = scaler.step
        self._active = True
        patch = self

        def step(scaler_self: Any, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
            if not patch._active:
                return patch._original(optimizer, *args, **kwargs)
            seen = patch.hooks.completed
            out = patch._original(optimizer, *args, **kwargs)
            if optimizer is patch.hooks.optimizer and patch.hooks.completed == seen:
                patch.on_skip(optimizer)
            return out

        self._bound = types.MethodType(step, scaler)
        scaler.step = self._bound

    def remove(self) -> None:
        self._active = False  # a later wrapper may still call ours: it then passes through
        if self.scaler.__dict__.get("step") is self._bound:
            del self.scaler.step
