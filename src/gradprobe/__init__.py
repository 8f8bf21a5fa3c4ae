"""gradprobe: show, explain and fix vanishing and exploding gradients in deep neural networks.

``import gradprobe`` imports neither torch nor TensorFlow: framework-specific names
(:func:`watch`, :class:`Monitor`, :func:`predict`) import their framework on first use.

Example::

    >>> import gradprobe
    >>> monitor = gradprobe.watch(model, optimizer)   # doctest: +SKIP
    >>> ...train as usual...                          # doctest: +SKIP
    >>> monitor.to_pandas()                           # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

from gradprobe.diagnosis import Thresholds, diagnose
from gradprobe.errors import (
    CaptureError,
    DataError,
    GradprobeError,
    GradprobeWarning,
    MissingExtraError,
    NoRunDirError,
    RunDirError,
    UnknownChoiceError,
    UsageError,
)
from gradprobe.run import Run, load_run

__version__ = "0.1.0"

# name -> (module, attribute, extra): imported on first use, so the core stays framework-free
_LAZY = {
    "watch": ("gradprobe.torch.monitor", "watch", "torch"),
    "Monitor": ("gradprobe.torch.monitor", "Monitor", "torch"),
    "predict": ("gradprobe.torch.predict", "predict", "torch"),
    "predict_mlp": ("gradprobe.theory", "predict_mlp", ""),
    "check": ("gradprobe.torch.check", "check", "torch"),
    "write_report": ("gradprobe.report", "write_report", ""),
}

__all__ = [
    "CaptureError",
    "DataError",
    "GradprobeError",
    "GradprobeWarning",
    "Monitor",
    "MissingExtraError",
    "NoRunDirError",
    "Run",
    "RunDirError",
    "Thresholds",
    "UnknownChoiceError",
    "UsageError",
    "__version__",
    "check",
    "diagnose",
    "load_run",
    "predict",
    "predict_mlp",
    "watch",
    "write_report",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'gradprobe' has no attribute {name!r}")
    module, attr, extra = _LAZY[name]
    try:
        value = getattr(importlib.import_module(module), attr)
    except ImportError as exc:
        if extra and exc.name == extra:
            raise MissingExtraError(extra, extra, f"gradprobe.{name}") from exc
        raise
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
