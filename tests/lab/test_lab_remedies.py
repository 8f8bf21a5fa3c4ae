"""Remedies ranked by what they do to training; one catalogue shared with diagnose."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from gradprobe.diagnosis import remedies as R
from gradprobe.errors import UnknownChoiceError
from gradprobe.lab import parse, remedy_spec
from gradprobe.lab.cell import during_training
from gradprobe.lab.remedies import REMEDIES, null_loss, rank_remedies


def _results(spec: dict[str, tuple]) -> pd.DataFrame:
    """remedy -> (test losses per seed, findings, decay during training[, statuses])."""
    rows = []
    for name, (losses, findings, decay, *status) in spec.items():
        for seed, loss in enumerate(losses):
            st = status[0][seed] if status else "complete"
            rows.append(
                dict(remedy=name, seed=seed, status=st, test_loss=loss, test_accuracy=math.nan,
                     findings=findings, first_last_ratio=1e-7, decay_per_layer=0.2,
                     decay_during=decay, initial_loss=2.0,
                     message="non-finite loss (nan) at step 19" if st == "non_finite" else "")
            )  # fmt: skip
    return pd.DataFrame(rows)


VANISH = "error:vanishing,warning:stalled_layers"


def test_diverging_residual_is_failed_and_ranked_last_with_its_reason():
    # gradprobe remedies california --variant sigmoid: residual ended at 773, baseline 1.35
    res = _results({
        "baseline": ([1.35, 1.34, 1.36], VANISH, 0.24),
        "residual": ([773.0, 640.0, 900.0], "warning:saturation", 0.9),
        "residual_scaled": ([1.2, 1.25, 1.3], "", 1.0),
    })  # fmt: skip
    r = rank_remedies(res, "regression", null=1.31)
    assert r["remedy"].tolist() == ["residual_scaled", "baseline", "residual"]
    last = r.iloc[-1]
    assert last["status"] == "failed" and last["rank"] == 3
    assert last["reason"].startswith("failed: diverged in 3 of 3 seeds (test loss 900")
    assert (r["reason"] != "").all()


def test_a_non_finite_seed_fails_the_remedy_and_says_what_the_others_reached():
    res = _results({
        "baseline": ([1.3, 1.3, 1.3], VANISH, 0.24),
        "selu": ([0.3, math.nan, 0.34], "", 0.9, ["complete", "non_finite", "complete"]),
    })  # fmt: skip
    r = rank_remedies(res, "regression", null=1.31).set_index("remedy")
    assert r.loc["selu", "status"] == "failed" and r.loc["selu", "rank"] == 2
    assert "diverged in 1 of 3 seeds (non-finite loss (nan) at step 19)" in r.loc["selu", "reason"]
    assert "the other seeds reached test loss 0.32" in r.loc["selu", "reason"]


def test_outcome_ranks_first_and_gradient_health_breaks_ties():
    # shallower used to rank 2nd on a zero findings score with a worse per-layer decay
    res = _results({
        "baseline": ([1.31, 1.31, 1.32], VANISH, 0.24),
        "shallower": ([0.55, 0.54, 0.56], "", 0.2),
        "batch_norm": ([0.56, 0.55, 0.55], "", 1.0),
        "tanh": ([0.35, 0.36, 0.35], "warning:saturation", 1.1),
        "adam": ([0.40, 0.41, 0.42], VANISH, 0.2),
    })  # fmt: skip
    r = rank_remedies(res, "regression", null=1.31)
    # tanh has a warning but the best outcome: outcome first
    assert r["remedy"].tolist() == ["tanh", "adam", "batch_norm", "shallower", "baseline"]
    why = dict(zip(r["remedy"], r["reason"], strict=True))
    assert "tied on outcome with shallower" in why["batch_norm"]
    assert "learnt nothing (predicting the mean gives 1.31)" in why["baseline"]
    assert why["tanh"].startswith("test loss 0.35 (0.35-0.36 over 3 seeds); 0.27x the baseline's")


def test_classification_ranks_by_accuracy():
    res = _results({"baseline": ([0.69] * 3, VANISH, 0.2), "relu_he": ([0.1] * 3, "", 1.0)})
    res["test_accuracy"] = np.where(res["remedy"] == "baseline", 0.37, 0.98)
    r = rank_remedies(res, "binary", null=null_loss("bce", np.array([0, 1]), np.array([0, 1])))
    assert r["remedy"].tolist() == ["relu_he", "baseline"]
    assert r.iloc[0]["reason"].startswith("test accuracy 0.98")


def test_gradient_health_during_training_sees_what_adam_changes():
    # step 0 is the same for adam and sgd; later steps differ, and that is what is judged
    rows = []
    for step, last in ((0, 1e-6), (1, 1e-2), (2, 1e-2)):
        for depth, norm in enumerate((last, 1.0)):
            rows.append(dict(step=step, layer=f"l{depth}", param="weight", depth=depth,
                             grad_norm=norm))  # fmt: skip
    params = pd.DataFrame(rows)
    layers = pd.DataFrame({"layer": ["l0", "l1"], "kind": ["Linear", "Linear"]})
    ratio, decay = during_training(params, layers)
    assert ratio == pytest.approx(1e-2) and decay == pytest.approx(1e-2)


def test_diagnose_and_the_lab_share_one_remedy_catalogue():
    advised = set()
    for f in (R.for_exploding, R.for_saturation):
        advised |= {r.name for r in f(("sigmoid",))}
    for g in (R.for_non_finite, R.for_dead_units, R.for_update_too_large, R.for_zero_gradients):
        advised |= {r.name for r in g()}
    advised |= {r.name for r in R.for_vanishing(("sigmoid",), False)}
    advised |= {r.name for r in R.for_stalled(True)}
    assert advised <= set(R.CATALOGUE)
    assert {"batch_norm", "clip"} <= advised and not {"normalisation", "clip_gradients"} & advised
    tried = advised & set(R.TRIALS)  # every advice the lab can train, under the same name
    assert tried <= set(REMEDIES) and {"relu_he", "adam", "lower_lr", "shallower"} <= tried
    spec = remedy_spec(parse({"data": "classification"}), ["clip_gradients", "normalisation"])
    assert spec.remedies == ("clip", "batch_norm")  # the old names still work
    with pytest.raises(UnknownChoiceError, match="unknown remedy 'find_nan'"):
        remedy_spec(parse({"data": "classification"}), ["find_nan"])  # advice only
