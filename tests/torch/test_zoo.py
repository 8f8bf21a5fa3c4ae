"""The zoo: every training stack records exact gradient norms; diagnose is right on each.

Each setup (tests/torch/zoo.py) trains a few steps and takes an independent reference of the
gradients each step applied; the recorded ``grad_norm`` of every parameter must match it.
Distributed setups (DDP, FSDP1, FSDP2 over gloo) are in test_zoo_dist.py.
"""

from __future__ import annotations

import pytest
import zoo

import gradprobe

TOLERANCE = 1e-10  # float64 sums of the same float32 values: agreement to rounding


@pytest.mark.parametrize("name", list(zoo.HEALTHY))
def test_zoo_grad_norms_match_an_independent_reference(name):
    result = zoo.HEALTHY[name]()
    assert len(result.refs.steps) == zoo.STEPS
    assert sorted(result.monitor.to_pandas()["step"].unique()) == list(range(zoo.STEPS))
    assert result.max_rel_error() < TOLERANCE


@pytest.mark.parametrize("name", list(zoo.HEALTHY))
def test_zoo_update_norms_are_the_weights_real_change(name):
    """Within float32 rounding of the step's own formula; exact where rounding decides (bf16)."""
    result = zoo.HEALTHY[name]()
    assert len(result.refs.updates) == zoo.STEPS
    assert result.max_update_error() < 1e-3


@pytest.mark.parametrize("name", list(zoo.HEALTHY))
def test_zoo_healthy_models_get_no_warning_or_error(name):
    result = zoo.HEALTHY[name]()
    serious = [f for f in gradprobe.diagnose(result.monitor) if f.severity != "info"]
    assert serious == [], [f"{f.code}: {f.summary}" for f in serious]


@pytest.mark.parametrize("name", list(zoo.BROKEN))
def test_zoo_broken_models_get_the_right_finding(name):
    build, code = zoo.BROKEN[name]
    findings = gradprobe.diagnose(build())
    assert code in {f.code for f in findings}, [f"{f.code}: {f.summary}" for f in findings]
