"""Torch on one thread: tiny nets run 50x faster than with threads fighting over 2 cores."""

from __future__ import annotations

import pytest


@pytest.fixture
def one_thread():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
