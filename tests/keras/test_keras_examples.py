"""The seed notebooks' Keras code in examples/seeds runs and leaves a complete gradprobe run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("keras", reason="the keras extra is not installed")

from gradprobe import load_run  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "seeds"


def _run_example(name: str, out: Path, env_extra: dict[str, str]) -> None:
    env = {
        **os.environ,
        "MPLBACKEND": "Agg",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "KERAS_BACKEND": "tensorflow",
        **env_extra,
    }
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / name), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.california
def test_seed_california_example(tmp_path, california_home):
    _run_example(
        "seed_california_housing.py", tmp_path / "run", {"SCIKIT_LEARN_DATA": str(california_home)}
    )
    run = load_run(tmp_path / "run")
    assert run.variants == ["sigmoid", "relu"] and not run.partial
    ratios = {v["name"]: v["first_last_ratio"] for v in run.summary["variants"]}
    assert ratios["sigmoid"] < 1e-4 < ratios["relu"]
    assert (tmp_path / "run" / "plots" / "variants.png").exists()


@pytest.mark.slow
def test_seed_make_classification_example(tmp_path):
    _run_example("seed_make_classification.py", tmp_path / "run", {})
    run = load_run(tmp_path / "run")
    assert run.variants == ["deep-sigmoid", "shallow-sigmoid", "deep-relu"]
    assert sorted(run.table("params")["step"].unique()) == [0, 1, 2]
    assert (tmp_path / "run" / "plots" / "heatmap-deep-sigmoid.png").exists()
