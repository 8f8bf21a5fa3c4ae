"""gradprobe for the Hugging Face ``Trainer``: one callback records what training really applies.

Example::

    import gradprobe
    from transformers import Trainer
    from gradprobe.integrations.transformers import GradprobeCallback

    probe = GradprobeCallback()  # or every=10, or budget=0.02
    Trainer(model=model, args=args, train_dataset=data, callbacks=[probe]).train()
    gradprobe.diagnose(probe.monitor)

What is recorded, and when:

- ``on_train_begin`` watches the model with the torch optimizer that accelerate's
  ``AcceleratedOptimizer`` wraps (the wrapper calls its ``step``); ``on_train_end`` detaches.
  The ``monitor`` keeps the records afterwards.
- The gradients are read in the optimizer's step pre-hook: after every micro-batch of
  ``gradient_accumulation_steps`` has been summed in, after ``max_grad_norm`` clipping, after
  mixed-precision unscaling -- as the step applies them. One record per optimizer step. When
  accelerate steps with a ``GradScaler`` (fp16), the monitor is given it: the backward signal is
  unscaled too, and a step the scaler skips is a row flagged ``skipped``.
- Record ``step`` k is ``state.global_step`` k when training started from step 0 (a resumed
  run adds :attr:`GradprobeCallback.first_step`).
- Evaluation (``eval_strategy``) runs under ``no_grad`` and leads to no optimizer step: it adds
  no record and leaves the activation statistics of the training steps alone.
- The Trainer gives callbacks no event when training fails; should it raise, call
  ``probe.monitor.detach()`` yourself (the next ``train()`` detaches the old monitor too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gradprobe.errors import CaptureError, require
from gradprobe.integrations._common import base_optimizer, check_every

require("transformers", "transformers", "gradprobe.integrations.transformers")

import transformers  # noqa: E402

from gradprobe.torch.monitor import Monitor, watch  # noqa: E402

__all__ = ["GradprobeCallback"]


class GradprobeCallback(transformers.TrainerCallback):  # type: ignore[misc,unused-ignore]
    """A ``TrainerCallback`` that watches the model being trained with :func:`gradprobe.watch`.

    Args:
        every: record optimizer steps 0, every, 2*every, ... (default ``None``: the overhead
            budget of :func:`gradprobe.watch` decides; pass ``budget=`` to change it).
        log_dir: where the monitor writes its records (Parquet), as in :func:`gradprobe.watch`.
        **watch_kwargs: passed on to :func:`gradprobe.watch` (``activations``, ``backward``,
            ``per_example``, ...).

    Attributes:
        monitor: the :class:`~gradprobe.torch.monitor.Monitor` of the latest ``train()``
            (``None`` before the first); its records stay readable after training.
        first_step: ``state.global_step`` when the monitor started (0 unless resumed).
    """

    def __init__(
        self, every: int | None = None, log_dir: str | Path | None = None, **watch_kwargs: Any
    ) -> None:
        super().__init__()
        self.every = check_every(every)
        self.log_dir = log_dir
        self.watch_kwargs = watch_kwargs
        self.monitor: Monitor | None = None
        self.first_step = 0

    def on_train_begin(
        self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any
    ) -> None:
        self._detach()
        optimizer = kwargs.get("optimizer")
        if model is None or optimizer is None:
            raise CaptureError(
                "GradprobeCallback expects the Trainer to pass the model and its optimizer to "
                f"on_train_begin, got model={type(model).__name__}, "
                f"optimizer={type(optimizer).__name__}; use it through Trainer(callbacks=[...])"
            )
        self.first_step = int(state.global_step)
        kwargs = dict(self.watch_kwargs)
        scaler = getattr(optimizer, "scaler", None)  # accelerate's GradScaler under fp16
        if scaler is not None:
            kwargs.setdefault("scaler", scaler)
        self.monitor = watch(
            model, base_optimizer(optimizer), every=self.every, log_dir=self.log_dir, **kwargs
        )

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._detach()

    def _detach(self) -> None:
        if self.monitor is not None and self.monitor.attached:
            self.monitor.flush()
            self.monitor.detach()
