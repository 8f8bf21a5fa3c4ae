"""A small real run (classification, two variants, fixed seed), made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    from gradprobe.experiments.runner import run_experiment
    from gradprobe.experiments.spec import resolve

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = resolve("classification", variant="deep-sigmoid,deep-relu-8", seed=0)
        out = tmp_path_factory.mktemp("runs") / "classification"
        run_experiment(config, out)
    finally:
        torch.set_num_threads(before)
    return out


@pytest.fixture(scope="session")
def small_html(small_run: Path) -> str:
    """The report of ``small_run`` under a fixed clock, rendered once."""
    from datetime import UTC, datetime

    from gradprobe.report import render_report

    return render_report(small_run, now=datetime(2026, 1, 1, tzinfo=UTC))
