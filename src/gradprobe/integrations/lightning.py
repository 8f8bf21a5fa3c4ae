"""gradprobe for Lightning 2.x: one callback records what ``Trainer.fit`` really applies.

Example::

    import gradprobe
    import lightning.pytorch as L
    from gradprobe.integrations.lightning import GradprobeCallback

    probe = GradprobeCallback()  # or every=10, or budget=0.02
    L.Trainer(callbacks=[probe]).fit(model, data)
    gradprobe.diagnose(probe.monitor)

What is recorded, and when:

- The callback watches the ``LightningModule`` with the optimizer from ``configure_optimizers``
  when training starts (after the sanity check) and detaches when training ends or fails; its
  ``monitor`` keeps the records afterwards.
- The monitor's hooks go on the torch optimizer itself (Lightning hands the module a
  ``LightningOptimizer`` wrapper that calls it). Lightning always calls ``optimizer.step(closure)``
  (automatic optimisation runs forward, backward and gradient clipping inside the closure;
  manual optimisation passes an empty one), so every step's gradients are the ones that step
  applies: clipped as ``gradient_clip_val`` clips them, accumulated over
  ``accumulate_grad_batches`` micro-batches (one record per optimizer step), unscaled under
  mixed precision. Under ``"16-mixed"`` the monitor is given the precision plugin's
  ``GradScaler``: the backward signal is unscaled too, and a step the scaler skips (inf/NaN
  found) is a row flagged ``skipped``.
- Record ``step`` k is the k-th optimizer step of this fit: ``trainer.global_step`` when the
  fit started from step 0 (a resumed fit adds :attr:`GradprobeCallback.first_step`).
- Validation runs under ``inference_mode`` and leads to no optimizer step: it adds no record
  and leaves the activation statistics alone (the sanity check runs before the monitor exists).
- Under DDP each process watches its own replica; the numbers are the global ones (see
  :func:`gradprobe.watch` for which ranks write). With ``strategy="ddp_spawn"`` training runs in
  child processes, so the main process's ``monitor`` stays ``None``: give a ``log_dir`` and read
  the records with :func:`gradprobe.load_run`.
- With ``log_to_logger`` (default), a few numbers of each recorded step also go to the Trainer's
  loggers (TensorBoard, CSV, W&B, ...) at that step: ``gradprobe/grad_norm/<layer>.<param>``,
  ``gradprobe/update_ratio/<layer>.<param>`` and ``gradprobe/backward_norm/<layer>`` (choose
  others with ``logged=``). They are sent every ``log_every_n_steps`` steps (the Trainer's
  setting by default) and when training ends, each with its own step.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gradprobe.errors import CaptureError, require
from gradprobe.integrations._common import (
    DEFAULT_LOGGED,
    base_optimizer,
    check_every,
    check_logged,
    scalars,
)

require("lightning", "lightning", "gradprobe.integrations.lightning")

import lightning.pytorch as pl  # noqa: E402

from gradprobe.torch.monitor import Monitor, watch  # noqa: E402

__all__ = ["GradprobeCallback"]


class GradprobeCallback(pl.Callback):  # type: ignore[misc,unused-ignore]
    """A Lightning callback that watches the model being fitted with :func:`gradprobe.watch`.

    Args:
        every: record optimizer steps 0, every, 2*every, ... (default ``None``: the overhead
            budget of :func:`gradprobe.watch` decides; pass ``budget=`` to change it).
        log_dir: where the monitor writes its records (Parquet), as in :func:`gradprobe.watch`.
        log_to_logger: also send a few numbers of each recorded step to the Trainer's loggers.
        logged: the statistics sent (columns of the ``params`` or ``layers`` table).
        log_every_n_steps: how often the numbers are sent (default: the Trainer's own setting);
            each recorded step is sent once, with its own step number.
        **watch_kwargs: passed on to :func:`gradprobe.watch` (``activations``, ``backward``,
            ``per_example``, ...).

    Attributes:
        monitor: the :class:`~gradprobe.torch.monitor.Monitor` of the latest fit (``None`` before
            the first); its records stay readable after the fit.
        first_step: ``trainer.global_step`` when the monitor started (0 unless resumed).
    """

    def __init__(
        self,
        every: int | None = None,
        log_dir: str | Path | None = None,
        *,
        log_to_logger: bool = True,
        logged: Iterable[str] = DEFAULT_LOGGED,
        log_every_n_steps: int | None = None,
        **watch_kwargs: Any,
    ) -> None:
        super().__init__()
        self.every = check_every(every)
        self.log_dir = log_dir
        self.log_to_logger = log_to_logger
        self.logged = check_logged(logged)
        if log_every_n_steps is not None:
            check_every(log_every_n_steps)
        self.log_every_n_steps = log_every_n_steps
        self.watch_kwargs = watch_kwargs
        self.monitor: Monitor | None = None
        self.first_step = 0
        self._sent = -1  # the last record step sent to the loggers
        self._next_send = 0  # the global step at which to send again

    # ------------------------------------------------------------ lifecycle
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._detach()
        optimizer = _the_optimizer(trainer.optimizers)
        self.first_step = trainer.global_step
        self._sent, self._next_send = -1, trainer.global_step + 1
        kwargs = dict(self.watch_kwargs)
        scaler = getattr(trainer.precision_plugin, "scaler", None)  # "16-mixed": a GradScaler
        if scaler is not None:
            kwargs.setdefault("scaler", scaler)
        self.monitor = watch(pl_module, optimizer, every=self.every, log_dir=self.log_dir, **kwargs)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if trainer.global_step >= self._next_send:
            self._send(trainer)
            every = self.log_every_n_steps or max(
                1, int(getattr(trainer, "log_every_n_steps", 1) or 1)
            )
            self._next_send = trainer.global_step + every

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._send(trainer)
        self._detach()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._detach()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._detach()

    # -------------------------------------------------------------- helpers
    def _detach(self) -> None:
        if self.monitor is not None and self.monitor.attached:
            self.monitor.flush()
            self.monitor.detach()

    def _send(self, trainer: pl.Trainer) -> None:
        """Send the numbers of the steps recorded since the last call to the loggers."""
        mon = self.monitor
        if mon is None or not self.log_to_logger or not trainer.loggers:
            return
        if not trainer.is_global_zero:
            return  # Lightning's loggers write on rank 0 only
        per_step = scalars(mon, self.logged, self._sent)
        for step, metrics in per_step.items():
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=self.first_step + step)
        if per_step:
            self._sent = max(per_step)


def _the_optimizer(optimizers: list[Any]) -> Any:
    if len(optimizers) != 1:
        raise CaptureError(
            f"GradprobeCallback watches one optimizer, got {len(optimizers)} from "
            "configure_optimizers; return exactly one, or watch the module yourself in "
            "on_train_start with gradprobe.watch(self, optimizer)"
        )
    return base_optimizer(optimizers[0])
