"""The errors and warnings gradprobe raises.

Every message says what was expected, what was got, and how to fix it::

    GradprobeError                  base of everything gradprobe raises on purpose
    ├── UsageError                  bad input: an option, value, combination or run directory
    │   │                           (CLI exit status 2)
    │   ├── UnknownChoiceError      a name that is not one of the valid choices (lists them)
    │   └── RunDirError             a run directory that is missing, empty or corrupt
    │       └── NoRunDirError       no run directory at the path given
    ├── DataError                   a dataset that cannot be found or read
    ├── CaptureError                a model or optimizer the monitor cannot watch
    └── MissingExtraError           an optional dependency is not installed (says which extra)

    GradprobeWarning                base of gradprobe's warnings
"""

from __future__ import annotations

from collections.abc import Iterable


class GradprobeError(Exception):
    """Base class of every error gradprobe raises on purpose."""


class UsageError(GradprobeError):
    """A bad option value or combination; the CLI exits with status 2."""


class UnknownChoiceError(UsageError, ValueError):
    """A name that is not among the valid choices."""

    def __init__(self, what: str, got: object, choices: Iterable[str]) -> None:
        self.what, self.got, self.choices = what, got, list(choices)
        super().__init__(f"unknown {what} {got!r}: expected one of {', '.join(self.choices)}")


class DataError(GradprobeError):
    """A dataset that cannot be found or read."""


class RunDirError(UsageError):
    """A run directory that is missing, empty or corrupt: bad input (CLI exit status 2)."""


class NoRunDirError(RunDirError):
    """No run directory at the path given (CLI exit status 2)."""


class CaptureError(GradprobeError):
    """A model or optimizer that the monitor cannot watch."""


class MissingExtraError(GradprobeError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, package: str, extra: str, feature: str) -> None:
        super().__init__(
            f"{feature} needs {package}, which is not installed: pip install 'gradprobe[{extra}]'"
        )


class GradprobeWarning(UserWarning):
    """Base class of gradprobe's warnings."""


def require(module: str, extra: str, feature: str):  # type: ignore[no-untyped-def,unused-ignore]
    """Import an optional dependency or raise :class:`MissingExtraError`."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(module, extra, feature) from exc
