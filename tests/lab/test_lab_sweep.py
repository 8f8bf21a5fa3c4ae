"""Sweeps end to end: results table, resume, interruption, failed cells, killed workers."""

from __future__ import annotations

import dataclasses

import lab_helpers
import numpy as np
import pandas as pd
import pytest

from gradprobe.lab import executors, load_results, parse, plan, run_plan
from gradprobe.lab.spec import Cell
from gradprobe.lab.sweep import finalise

RAW = {"data": "classification", "activation": "sigmoid,relu", "depth": "2,4", "seeds": 2}
COLUMNS = {
    "cell", "label", "activation", "depth", "init", "norm", "residual", "optimizer", "lr",
    "seed", "status", "first_last_ratio", "decay_per_layer", "grad_norm_by_depth", "findings",
    "train_loss", "test_loss", "train_accuracy", "test_accuracy", "wall_time_s",
}  # fmt: skip


def test_sweep_writes_one_row_per_cell_and_seed_and_resumes(tmp_path):
    spec = parse(RAW)
    p = plan(spec, tmp_path)
    assert len(p.todo) == 4 and all(p.batched.values())
    summary = run_plan(p, tmp_path)
    assert summary["status"] == "complete" and summary["finished"] == 4
    res = load_results(tmp_path)
    assert set(res.columns) >= COLUMNS and len(res) == 8
    deep = res[(res["activation"] == "sigmoid") & (res["depth"] == 4)]
    assert (deep["first_last_ratio"] < 0.1).all() and deep["findings"].str.contains(
        "vanishing"
    ).all()
    r = res.iloc[0]
    assert np.isclose(
        r["decay_per_layer"] ** (len(r["grad_norm_by_depth"]) - 1), r["first_last_ratio"]
    )
    assert (tmp_path / "report.html").exists() and (
        tmp_path / "plots" / "ratio_vs_depth.png"
    ).exists()
    again = plan(spec, tmp_path)
    assert again.todo == [] and len(again.done) == 4
    bigger = plan(parse({**RAW, "depth": "2,4,6"}), tmp_path)
    assert len(bigger.todo) == 2  # only the new cells


def test_interrupted_sweep_keeps_and_reports_finished_cells(tmp_path):
    p = plan(parse(RAW), tmp_path)
    seen = []

    def stop_after_one(result):  # type: ignore[no-untyped-def]
        seen.append(result.key)
        raise KeyboardInterrupt

    summary = run_plan(p, tmp_path, on_cell=stop_after_one)
    assert summary["status"] == "interrupted" and summary["finished"] == 1
    assert len(load_results(tmp_path)) == 2
    assert len(plan(parse(RAW), tmp_path).todo) == 3


def test_a_failing_cell_is_recorded_with_its_reason_and_the_sweep_goes_on(tmp_path):
    raw = {"data": "classification", "activation": "relu", "depth": "2,4", "seeds": 2,
           "lr": "0.1,1e6", "optimizer": "sgd"}  # fmt: skip
    p = plan(parse(raw), tmp_path)
    bad = p.cells[1]
    p.cells[1] = p.todo[1] = dataclasses.replace(
        bad, model=dataclasses.replace(bad.model, width=-1)
    )
    summary = run_plan(p, tmp_path)
    res = load_results(tmp_path)
    assert summary["status"] == "partial" and len(res) == 8
    err = res[res["status"] == "error"]
    assert len(err) == 2 and err["message"].str.contains("Error").all()
    assert (res["status"] == "complete").sum() >= 2


def _cells(tmp_path) -> tuple[list[Cell], object, dict[str, bool]]:  # type: ignore[no-untyped-def]
    p = plan(parse({"data": "classification", "depth": "2,4,6", "seeds": 2}), tmp_path / "sw")
    return p.cells, p.data, p.batched


@pytest.mark.parametrize("runner, status", [("crash_once", "complete"), ("crash_always", "error")])
def test_a_killed_worker_costs_only_its_cell(tmp_path, monkeypatch, runner, status):
    monkeypatch.setenv("LAB_CRASH_DIR", str(tmp_path))
    cells, data, batched = _cells(tmp_path)
    got = {}
    executors.run_workers(
        cells, data, batched, lambda r: got.setdefault(r.key, r), workers=2,
        runner=getattr(lab_helpers, runner),
    )  # fmt: skip
    assert set(got) == {c.key for c in cells}
    by_label = {c.label: got[c.key].rows for c in cells}
    assert (by_label["depth=4"]["status"] == status).all()
    assert (by_label["depth=2"]["status"] == "complete").all()
    assert (by_label["depth=6"]["status"] == "complete").all()
    if status == "error":
        assert by_label["depth=4"]["message"].str.contains("worker process died").all()


@pytest.mark.slow
def test_workers_give_the_same_numbers_as_one_process(tmp_path):
    spec = parse({"data": "classification", "depth": "2,3", "seeds": 2, "batched": "off"})
    one = run_plan(plan(spec, tmp_path / "a"), tmp_path / "a")
    two = run_plan(plan(spec, tmp_path / "b"), tmp_path / "b", workers=2)
    assert one["status"] == two["status"] == "complete"
    a, b = load_results(tmp_path / "a"), load_results(tmp_path / "b")
    cols = ["first_last_ratio", "test_loss", "train_loss"]
    pd.testing.assert_frame_equal(a[cols], b[cols], rtol=1e-6)


def test_finalise_on_an_empty_sweep_does_not_fail(tmp_path):
    p = plan(parse(RAW), tmp_path)
    assert finalise(p, tmp_path, {}, "interrupted", 0.0)["finished"] == 0
