"""False alarms of issue 13, each reproduced: 0/0, NaN "not measured", skipped steps, and a
finding's text that disagreed with its evidence."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch
from diagnose_cases import case, he, mlp, record, seeded
from synthetic import tables
from torch import nn

import gradprobe
from gradprobe.diagnosis import RULES, Finding, diagnose
from gradprobe.diagnosis.flow import depth_trend

FLAT = [1.0] * 6


@pytest.fixture(autouse=True)
def _quiet(one_thread):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NaN reductions in the NaN cases
        yield


def codes(found: list[Finding]) -> dict[str, str]:
    return {f.code: f.severity for f in found}


def _masked(model: nn.Module, zero_at: set[int], steps: int = 4):
    """SGD on a regression task; the loss is multiplied by 0 (a fully masked batch) at
    ``zero_at``."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 32, generator=g), torch.randn(64, 1, generator=g)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    with gradprobe.watch(model, opt, every=1, per_example=True) as mon:
        for step in range(steps):
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            (loss * 0 if step in zero_at else loss).backward()
            opt.step()
    return mon


# ------------------------------------------------------------------ all-zero gradients
@pytest.mark.parametrize("depth", [1, 6])
def test_all_zero_gradients_are_not_exploding_nor_stalled(depth):
    """loss * 0: every gradient is exactly 0; 0/0 was read as inf ("exploding"), and updates of
    0 as "stalled, raise the learning rate"."""
    seeded(0)
    found = diagnose(_masked(mlp("relu", depth, 32, he), zero_at={0, 1, 2, 3}))
    assert list(codes(found)) == ["zero_gradients"]
    z = found[0]
    assert z.severity == "warning"  # nothing trained on any recorded step
    assert z.evidence["steps_zero"] == 4 and z.evidence["steps_recorded"] == 4


def test_a_masked_batch_now_and_then_is_information_only():
    seeded(0)
    found = diagnose(_masked(mlp("relu", 6, 32, he), zero_at={2}, steps=8))
    assert [(f.code, f.severity) for f in found] == [("zero_gradients", "info")]
    assert found[0].steps == (2,)


def test_zero_over_zero_is_no_ratio_and_never_flagged():
    t = depth_trend([0.0, 0.0, 0.0])
    assert math.isnan(t.ratio)
    assert depth_trend([0.0, 1.0]).ratio == 0.0  # nothing reached the input: vanished
    params, layers = tables([0.0] * 6)
    assert "exploding" not in codes(diagnose((params, layers)))


# ------------------------------------------------------------------ NaN = not measured
def test_frozen_first_layer_is_not_non_finite():
    """Its backward_norm is not measured (NaN) while every gradient is finite."""
    seeded(0)
    model = mlp("relu", 6, 32, he)
    model[0].requires_grad_(False)
    mon = _masked(model, zero_at=set())
    layers = mon.to_pandas("layers")
    assert layers["backward_norm"].isna().any()  # the reproduction: a NaN statistic
    assert diagnose(mon) == []


def test_a_statistic_not_measured_at_some_steps_is_not_non_finite():
    def edit(step, d, p, lay):
        if d == 0 and step % 2:
            lay["backward_norm"] = np.nan
        if d == 3 and step == 5:
            lay.update(act_mean=np.nan, act_std=np.nan, act_rms=np.nan, saturated_frac=np.nan)
        if d == 2 and step == 4:
            p.update(weight_norm=np.nan, update_ratio=np.nan)

    assert diagnose(tables(FLAT, edit=edit)) == []


@pytest.mark.parametrize("column", ["act_rms", "backward_norm"])
def test_an_infinite_statistic_is_still_non_finite(column):
    def edit(step, d, p, lay):
        if d == 4 and step >= 3:
            lay[column] = math.inf

    found = diagnose(tables(FLAT, edit=edit))
    assert codes(found) == {"non_finite": "error"}
    assert found[0].evidence["first_step"] == 3


def test_nonfinite_gradient_elements_are_non_finite():
    def edit(step, d, p, lay):
        if step == 6:
            p.update(grad_nonfinite=3, grad_norm=np.nan)

    found = diagnose(tables(FLAT, edit=edit))
    assert codes(found) == {"non_finite": "error"}
    assert found[0].evidence["nonfinite_gradient_elements"] == 3 * len(FLAT)


# ------------------------------------------------------------------ loss-scaler skips
def _skipped_at(steps: set[int]):
    def edit(step, d, p, lay):
        if step in steps:  # what a GradScaler step that found inf looks like
            p.update(skipped=True, grad_norm=math.inf, grad_nonfinite=5, update_norm=0.0,
                     update_ratio=0.0)  # fmt: skip
            lay.update(skipped=True, backward_norm=math.inf)

    return edit


def test_a_gradscaler_skipped_step_is_information_not_non_finite():
    found = diagnose(tables(FLAT, edit=_skipped_at({2})))
    assert [(f.code, f.severity) for f in found] == [("skipped_steps", "info")]
    f = found[0]
    assert f.steps == (2,)
    assert f.evidence["steps_skipped"] == 1 and f.evidence["steps_recorded"] == 8
    assert "1 of 8 recorded steps skipped by the loss scaler" in f.summary


def test_a_real_gradscaler_skip_is_reported_as_information():
    """torch.amp.GradScaler finds inf at step 2 and skips it: info, never non_finite."""
    seeded(0)
    model = mlp("relu", 4, 32, he)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 32, generator=g), torch.randn(64, 1, generator=g)
    with gradprobe.watch(model, opt, every=1, scaler=scaler) as mon:
        for step in range(6):
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            scaler.scale(loss * math.inf if step == 2 else loss).backward()
            scaler.step(opt)
            scaler.update()
    params = mon.to_pandas()
    assert params.groupby("step")["skipped"].all().tolist() == [s == 2 for s in range(6)]
    found = diagnose(mon)
    assert [(f.code, f.severity, f.steps) for f in found] == [("skipped_steps", "info", (2,))]


def test_skipped_steps_are_left_out_of_the_other_rules():
    edit = _skipped_at({0, 1, 2, 3, 4, 5})  # stalled/inf on most steps, but skipped

    def worse(step, d, p, lay):
        edit(step, d, p, lay)
        if step < 6:
            lay["backward_norm"] = 10.0 ** (6 - d)  # an "exploding" profile, only when skipped

    found = diagnose(tables(FLAT, edit=worse))
    assert list(codes(found)) == ["skipped_steps"]
    assert found[0].severity == "warning"  # the scaler skipped most steps: persistent


def test_records_without_a_skipped_column_still_work():
    params, layers = tables(FLAT)
    assert diagnose((params.drop(columns="skipped"), layers.drop(columns="skipped"))) == []


# ------------------------------------------------------------------ text agrees with evidence
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[+-]?\d+)?")


def _leaves(v) -> list[float]:
    if isinstance(v, dict):
        return [x for item in v.values() for x in _leaves(item)]
    if isinstance(v, (list, tuple)):
        return [x for item in v for x in _leaves(item)]
    if isinstance(v, (bool, str)) or v is None:
        return []
    return [float(v)]


def assert_text_matches_evidence(f: Finding) -> None:
    """Every number the summary prints is one of the evidence's numbers (or 100x for a %)."""
    text = re.sub(r"'[^']*'", "", f.summary)  # quoted layer names
    allowed = set()
    for v in _leaves(f.evidence):
        if math.isfinite(v):
            allowed |= {f"{v:.3g}", f"{100 * v:.3g}", str(int(v)) if v == int(v) else ""}
        else:
            allowed.add("inf")
    printed = _NUMBER.findall(text.replace("inf", " inf "))
    stray = [n for n in printed if n not in allowed]
    assert not stray, f"{f.code}: {stray} printed, not in evidence: {f.summary} / {f.evidence}"


def test_exploding_text_prints_the_evidence_factor():
    params, layers = tables([4.0**k for k in range(9, -1, -1)])
    (f,) = diagnose((params, layers))
    assert f.code == "exploding"
    assert f.evidence["per_layer_factor"] == pytest.approx(4.0)
    assert "x4 per layer towards the input" in f.summary
    assert_text_matches_evidence(f)


CASES = ["deep_sigmoid", "large_init", "nan", "dead_bias", "saturated_sigmoid", "tiny_lr"]


@pytest.mark.parametrize("name", CASES)
def test_every_finding_prints_its_evidence(name):
    found = diagnose(case(name, 0))
    assert found
    for f in found:
        assert_text_matches_evidence(f)


def test_every_synthetic_finding_prints_its_evidence():
    found = [
        *diagnose(tables([0.25**k for k in range(9, -1, -1)])),
        *diagnose(tables(FLAT, edit=_skipped_at({1}))),
        *diagnose(tables([0.0] * 6)),
        *diagnose(
            tables(
                FLAT,
                activation="relu",
                edit=lambda s, d, p, lay: lay.update(dead_frac=0.8 if d == 2 else 0.0),
            )
        ),  # fmt: skip
        *diagnose(tables(FLAT, edit=lambda s, d, p, lay: p.update(update_ratio=0.5))),
        *diagnose(tables(FLAT, edit=lambda s, d, p, lay: lay.update(act_rms=math.inf))),
    ]
    assert {f.code for f in found} >= {
        "vanishing",
        "skipped_steps",
        "zero_gradients",
        "dead_units",
        "update_too_large",
        "non_finite",
    }
    for f in found:
        assert_text_matches_evidence(f)


def test_theory_mismatch_prints_its_evidence():
    from types import SimpleNamespace

    from gradprobe.diagnosis import Thresholds, VariantRecords

    params, layers = tables([0.01, 0.1, 1.0])
    prediction = SimpleNamespace(grad_norm_by_depth=[0.5, 0.7, 1.0], log_tolerance=0.2)
    rec = VariantRecords("", params, layers, prediction)
    (f,) = RULES["theory_mismatch"](rec, Thresholds())
    assert f.evidence["chance_factor"] == pytest.approx(math.exp(0.2))
    assert_text_matches_evidence(f)


def test_new_rules_are_registered():
    assert {"zero_gradients", "skipped_steps"} <= set(RULES)


# ------------------------------------------------------------------ broken nets still found
@pytest.mark.parametrize("seed", range(2))
def test_nan_from_a_huge_learning_rate_is_non_finite(seed):
    seeded(seed)
    found = diagnose(record(mlp("relu", 6, 32, he), seed, lr=1e4, steps=6))
    assert codes(found).get("non_finite") == "error"
    assert "exploding" not in codes(found)


def test_twenty_sigmoid_layers_vanish():
    seeded(0)
    from diagnose_cases import glorot

    found = diagnose(record(mlp("sigmoid", 20, 32, glorot), 0))
    assert codes(found).get("vanishing") == "error"


def test_lbfgs_steps_are_not_held_to_first_order_update_bounds():
    """One LBFGS step is several iterations with a line search: weights legitimately move by a
    large share of their size, so update_too_large must not fire on a healthy LBFGS run."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1)
    )
    opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=4)
    gen = torch.Generator().manual_seed(0)
    with gradprobe.watch(model, opt) as mon:
        for _ in range(4):
            x, y = torch.randn(32, 8, generator=gen), torch.randn(32, 1, generator=gen)

            def closure(x=x, y=y):
                opt.zero_grad()
                loss = nn.functional.mse_loss(model(x), y)
                loss.backward()
                return loss

            opt.step(closure)
    assert "update_too_large" not in {f.code for f in diagnose(mon)}
    # the same records with the optimizer unknown are judged by the first-order bounds
    anonymous = (mon.to_pandas("params"), mon.to_pandas("layers"))
    assert "update_too_large" in {f.code for f in diagnose(anonymous)}
