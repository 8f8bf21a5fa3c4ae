"""A run whose loss went NaN/inf between recorded steps (every > 1, the budget) is diagnosed as
non_finite from its loss: the verdict never reads 'healthy' beside a diverged run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from synthetic import tables
from test_false_alarms import FLAT, assert_text_matches_evidence

from gradprobe.diagnosis import diagnose, verdict
from gradprobe.run import Run


def run_with_loss(loss: list[float]) -> Run:
    params, layers = tables(FLAT)  # healthy, finite records on steps 0..7
    params, layers = params.assign(variant="v"), layers.assign(variant="v")
    steps = pd.DataFrame({"variant": "v", "step": np.arange(len(loss)), "epoch": 0, "loss": loss})
    config = {"variants": [{"name": "v"}]}
    return Run(Path("."), config, tables={"params": params, "layers": layers, "steps": steps})


def test_a_loss_that_turned_nan_between_recorded_steps_is_non_finite() -> None:
    run = run_with_loss([1.0] * 19 + [float("inf")] + [float("nan")] * 20)
    (f,) = [f for f in diagnose(run) if f.code == "non_finite"]
    assert f.severity == "error"
    assert f.evidence["first_nonfinite_loss_step"] == 19
    assert f.steps == (19,)
    assert "diverged" in f.summary
    assert_text_matches_evidence(f)
    assert not verdict(diagnose(run)).startswith("healthy")


def test_a_finite_loss_adds_no_finding() -> None:
    assert diagnose(run_with_loss([1.0] * 40)) == []
