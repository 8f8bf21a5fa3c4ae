"""Shared by the integration tests: tiny models run on one thread, quietly."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def _one_thread_quiet():
    """Tiny models gain nothing from threads (and lose much on a busy machine); the frameworks'
    informational logging is turned down. Both are restored afterwards."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    loggers = [logging.getLogger(n) for n in ("lightning", "transformers", "accelerate")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    yield
    torch.set_num_threads(threads)
    for lg, level in zip(loggers, levels, strict=True):
        lg.setLevel(level)
