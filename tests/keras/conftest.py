"""Fixtures of the Keras tests: small models and data (Keras is an optional extra)."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip(
    "keras", reason="the keras extra is not installed (pip install 'gradprobe[keras]')"
)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(64, 5)).astype("float32"), rng.normal(size=(64, 1)).astype("float32")
