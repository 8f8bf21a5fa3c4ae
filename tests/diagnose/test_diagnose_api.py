"""The API: inputs, per-variant split, thresholds, findings as data, depth-trend math."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from gradprobe.diagnosis import RULES, Finding, Remedy, Thresholds, brief, diagnose, verdict
from gradprobe.diagnosis.flow import depth_trend, persistent
from gradprobe.errors import UnknownChoiceError, UsageError
from gradprobe.records import conform


def tables(norms_by_variant: dict[str, list[float]], steps: int = 2):
    """Synthetic records: backward signal and weight gradients equal to ``norms`` at each step."""
    prows, lrows = [], []
    for variant, norms in norms_by_variant.items():
        for step in range(steps):
            for d, n in enumerate(norms):
                base = {"step": step, "layer": f"<b>{d}</b>", "depth": d, "variant": variant}
                prows.append(
                    {
                        **base,
                        "param": "weight",
                        "numel": 64 * 64,
                        "grad_norm": n,
                        "grad_rms": n / 64,
                        "grad_mean": 0.0,
                        "grad_std": n / 64,
                        "grad_max_abs": n,
                        "grad_zero_frac": 0.0,
                        "grad_nonfinite": 0,
                        "weight_norm": 8.0,
                        "update_norm": 8e-3,
                        "update_ratio": 1e-3,
                        "pe_grad_rms": n,
                    }
                )
                lrows.append(
                    {
                        **base,
                        "kind": "Linear",
                        "activation": "tanh",
                        "act_mean": 0.0,
                        "act_std": 0.5,
                        "act_rms": 0.5,
                        "saturated_frac": 0.0,
                        "dead_frac": np.nan,
                        "backward_norm": n,
                    }
                )
    return conform(pd.DataFrame(prows), "params"), conform(pd.DataFrame(lrows), "layers")


def test_depth_trend_matches_a_slow_reference():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = np.exp(rng.normal(size=rng.integers(2, 12)))
        t = depth_trend(n)
        d = np.arange(len(n))
        slope = np.sum((d - d.mean()) * (np.log(n) - np.log(n).mean())) / np.sum(
            (d - d.mean()) ** 2
        )
        assert t.slope == pytest.approx(slope, rel=1e-9, abs=1e-12)
        steps = [math.log(n[i + 1] / n[i]) for i in range(len(n) - 1)]
        assert t.factor == pytest.approx(math.exp(-float(np.median(steps))))
        assert t.ratio == pytest.approx(n[0] / n[-1])


def test_depth_trend_is_scale_free():
    n = np.array([1e-3, 3e-3, 2e-2, 0.1])
    a, b = depth_trend(n), depth_trend(n * 1e6)
    assert a.ratio == pytest.approx(b.ratio) and a.factor == pytest.approx(b.factor)


def test_persistent():
    assert not persistent([], 0.5)
    assert persistent([True, True, False, False], 0.5)
    assert not persistent([True, False, False, False], 0.5)
    assert persistent([False] * 6 + [True] * 2, 0.5)  # stuck for the last quarter
    assert not persistent([False] * 7 + [True], 0.5)


def test_per_variant_and_scale_free_on_synthetic_records():
    geometric = [0.25**k for k in range(9, -1, -1)]  # x0.25 per layer
    params, layers = tables({"sick": geometric, "flat": [1.0] * 10})
    found = diagnose((params, layers))
    assert [(f.variant, f.code) for f in found] == [("sick", "vanishing")]
    ev = found[0].evidence
    assert ev["per_layer_factor"] == pytest.approx(0.25)
    assert ev["first_last_ratio"] == pytest.approx(0.25**9)
    scaled = diagnose(
        (
            params.assign(
                grad_norm=params["grad_norm"] * 1e-9, pe_grad_rms=params["pe_grad_rms"] * 1e-9
            ),
            layers.assign(backward_norm=layers["backward_norm"] * 1e-9),
        )
    )
    assert [(f.variant, f.code) for f in scaled] == [("sick", "vanishing")]


def test_exploding_is_the_mirror_image():
    params, layers = tables({"x": [4.0**k for k in range(9, -1, -1)]})
    assert [f.code for f in diagnose((params, layers))] == ["exploding"]


def test_one_odd_layer_is_not_a_trend():
    params, layers = tables({"x": [1e-3] + [1.0] * 9})
    assert diagnose((params, layers)) == []


def test_thresholds_are_configurable_and_validated():
    params, layers = tables({"x": [0.5**k for k in range(9, -1, -1)]})  # ratio 2e-3
    assert [(f.code, f.severity) for f in diagnose((params, layers))] == [("vanishing", "error")]
    # above ratio_low the fall is still past the trainable depth (ratio_warn = e^-3): a warning
    milder = diagnose((params, layers), thresholds={"ratio_low": 1e-3})
    assert [(f.code, f.severity) for f in milder] == [("vanishing", "warning")]
    off = {"ratio_low": 1e-3, "ratio_warn": 1e-3}
    assert diagnose((params, layers), thresholds=off) == []
    assert diagnose((params, layers), thresholds=Thresholds(**off)) == []
    with pytest.raises(UsageError, match="ratio_warn"):
        Thresholds(ratio_warn=1e-3)  # below ratio_low
    with pytest.raises(UsageError, match="ratio_low"):
        Thresholds(ratio_low=2.0)
    with pytest.raises(UsageError, match="unknown threshold"):
        Thresholds().replace(nope=1)


def test_rules_can_be_chosen_by_code():
    params, layers = tables({"x": [0.25**k for k in range(9, -1, -1)]})
    assert diagnose((params, layers), rules=["exploding"]) == []
    with pytest.raises(UnknownChoiceError, match="vanishing"):
        diagnose((params, layers), rules=["vanish"])


def test_bad_input_says_what_is_accepted():
    with pytest.raises(UsageError, match="Run, a Monitor"):
        diagnose(42)
    with pytest.raises(UsageError, match="pair"):
        diagnose((1, 2, 3))


def test_findings_are_frozen_data_and_json_safe():
    params, layers = tables({"x": [0.25**k for k in range(9, -1, -1)]})
    f = diagnose((params, layers))[0]
    assert isinstance(f, Finding) and all(isinstance(r, Remedy) for r in f.remedies)
    with pytest.raises(AttributeError):
        f.code = "other"  # type: ignore[misc]
    d = json.loads(json.dumps(f.to_dict(), allow_nan=False))
    assert d["code"] == "vanishing" and d["layers"][0] == "<b>0</b>"
    assert brief([f]) == [
        {"code": "vanishing", "severity": "error", "layers": list(f.layers), "depths": d["depths"]}
    ]
    assert d["depths"] == list(range(1, len(f.layers) + 1))  # 1-based from the input
    assert verdict([f]).startswith("will not train well")
    assert verdict([f], variant="other") == "healthy: no finding"


def test_registry_has_the_codes_of_the_issue():
    assert set(RULES) >= {
        "vanishing",
        "exploding",
        "non_finite",
        "saturation",
        "dead_units",
        "stalled_layers",
        "update_too_large",
    }


def test_diagnose_imports_neither_torch_nor_tensorflow():
    code = (
        "import sys, gradprobe.diagnosis; "
        "print(any(m in sys.modules for m in ('torch', 'tensorflow')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
