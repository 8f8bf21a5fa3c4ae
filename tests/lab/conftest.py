"""Shared helpers of the lab tests: small sweeps on the 100-point classification data."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Other test runs share the machine: one torch thread keeps timings sane."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
