"""gradprobe: show, explain and fix vanishing and exploding gradients in deep neural networks."""

from __future__ import annotations

from gradprobe.errors import (
    CaptureError,
    DataError,
    GradprobeError,
    GradprobeWarning,
    MissingExtraError,
    RunDirError,
    UnknownChoiceError,
    UsageError,
)

__version__ = "0.1.0"

__all__ = [
    "CaptureError",
    "DataError",
    "GradprobeError",
    "GradprobeWarning",
    "MissingExtraError",
    "RunDirError",
    "UnknownChoiceError",
    "UsageError",
    "__version__",
]
