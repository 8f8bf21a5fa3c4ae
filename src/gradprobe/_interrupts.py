"""Ctrl-C held back while records change hands.

Rows move from the monitor's pending steps into the record buffers, and from the buffers to a
Parquet part, in code that first takes them out of one place and then puts them in the other.
A ``KeyboardInterrupt`` raised between the two would lose them; :func:`held_interrupts` holds
SIGINT back for that stretch and delivers it when the stretch ends, so an interrupted run keeps
every step it recorded::

    with held_interrupts():
        pending, self._pending = self._pending, []
        buffer.extend(rows_of(pending))
    # a Ctrl-C pressed inside is raised here, as KeyboardInterrupt (or whatever handler was set)

Only the main thread receives signals (and only it may set a handler): elsewhere, and where
SIGINT has no Python handler, the block runs as it is. Setting the handler twice costs ~3 us.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


@contextmanager
def held_interrupts() -> Iterator[None]:
    """Run the block with SIGINT held back; deliver it, to the handler that was set, after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        previous = signal.getsignal(signal.SIGINT)
    except (ValueError, OSError):  # pragma: no cover - no signal support here
        previous = None
    if previous is None:  # set from outside Python: leave it alone
        yield
        return
    caught: list[tuple[int, FrameType | None]] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        caught.append((signum, frame))

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            _deliver(previous, *caught[0])


def _deliver(handler: Any, signum: int, frame: FrameType | None) -> None:
    if handler is signal.SIG_IGN:
        return
    if handler is signal.SIG_DFL:
        os.kill(os.getpid(), signum)
        return
    handler(signum, frame)
