"""The Ray executor against a local Ray instance started here (ray is the optional 'ray' extra)."""

from __future__ import annotations

import pytest

from gradprobe.lab import load_results, parse, plan, run_plan

ray = pytest.importorskip("ray", reason="ray is not installed: pip install 'gradprobe[ray]'")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_sweep_matches_a_local_sweep(tmp_path, local_ray):
    spec = parse({"data": "classification", "activation": "sigmoid,relu", "depth": 3, "seeds": 2})
    here = run_plan(plan(spec, tmp_path / "here"), tmp_path / "here")
    on_ray = run_plan(plan(spec, tmp_path / "ray"), tmp_path / "ray", executor="ray")
    assert here["status"] == on_ray["status"] == "complete"
    a, b = load_results(tmp_path / "here"), load_results(tmp_path / "ray")
    assert a["cell"].tolist() == b["cell"].tolist()
    for col in ("first_last_ratio", "test_loss"):
        assert a[col].tolist() == pytest.approx(b[col].tolist())
    assert a["findings"].tolist() == b["findings"].tolist()
    assert len(plan(spec, tmp_path / "ray").todo) == 0  # resumable like any sweep
