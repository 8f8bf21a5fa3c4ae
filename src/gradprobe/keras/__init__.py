"""The Keras side of gradprobe: a ``model.fit`` callback recording gradients fit applies.

Importing this package imports Keras (and its backend, TensorFlow by default), never torch
unless Keras itself runs on torch. ``import gradprobe`` alone imports neither.

Example::

    >>> import gradprobe.keras                                          # doctest: +SKIP
    >>> mon = gradprobe.keras.GradientMonitor(every=1)                  # doctest: +SKIP
    >>> model.fit(x, y, callbacks=[mon])                                # doctest: +SKIP
    >>> gradprobe.keras.save_run(mon, "runs/mine")                      # doctest: +SKIP
"""

from __future__ import annotations

try:
    import keras  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the install
    from gradprobe.errors import MissingExtraError

    raise MissingExtraError("keras", "keras", "gradprobe.keras") from exc

from gradprobe.keras.monitor import GradientMonitor
from gradprobe.keras.runs import save_run

__all__ = ["GradientMonitor", "save_run"]
