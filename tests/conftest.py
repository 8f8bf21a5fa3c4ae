"""Shared fixtures: the offline California Housing cache, built once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GRADPROBE_SHARED", REPO.parent / "shared"))
CACHE_SCRIPT = SHARED / "data" / "california_housing" / "make_sklearn_cache.py"


@pytest.fixture(scope="session")
def california_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scikit-learn data home holding the California Housing cache, built from ../shared."""
    if not CACHE_SCRIPT.exists():
        pytest.skip(
            f"California Housing raw data not found at {CACHE_SCRIPT} (set GRADPROBE_SHARED)"
        )
    home = tmp_path_factory.mktemp("scikit_learn_data")
    subprocess.run([sys.executable, str(CACHE_SCRIPT), str(home)], check=True, capture_output=True)
    return home
