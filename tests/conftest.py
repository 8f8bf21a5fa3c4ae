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


@pytest.fixture
def ctrl_c_in(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """``ctrl_c_in(cls, name)``: the first call of ``cls.name`` receives a SIGINT (as from
    Ctrl-C) before it runs; returns a list that holds one item once that happened."""
    import signal

    def arm(cls: type, name: str) -> list[int]:
        original = getattr(cls, name)
        hits: list[int] = []

        def interrupted(self, *args):  # type: ignore[no-untyped-def]
            if not hits:
                hits.append(1)
                os.kill(os.getpid(), signal.SIGINT)
            return original(self, *args)

        monkeypatch.setattr(cls, name, interrupted)
        return hits

    return arm
