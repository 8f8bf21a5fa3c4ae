"""The command line end to end: list, run, plot, demo, and every kind of bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from click.testing import CliRunner

from gradprobe.cli import main
from gradprobe.run import load_run

PNG = b"\x89PNG\r\n\x1a\n"


def invoke(*args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_list_names_both_experiments_and_their_variants():
    res = invoke("list")
    assert res.exit_code == 0
    for word in ("california", "classification", "deep-sigmoid", "shallow-sigmoid", "deep-relu-8"):
        assert word in res.output


def test_run_classification_writes_a_complete_run_dir_and_json(tmp_path):
    out = tmp_path / "run"
    res = invoke("run", "classification", "--json", "--out", str(out), "--seed", "1")
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout)
    assert obj["experiment"] == "classification"
    names = [v["name"] for v in obj["variants"]]
    assert names == ["deep-sigmoid", "shallow-sigmoid", "deep-relu", "deep-relu-8"]
    for v in obj["variants"]:
        g = v["grad_norm_by_depth"]
        assert v["first_last_ratio"] == pytest.approx(g[0] / g[-1])
        assert isinstance(v["final_loss"], float)
    deep = obj["variants"][0]
    assert deep["first_last_ratio"] < 1e-3
    for name in ("config.json", "summary.json", "status.json", "steps.parquet", "epochs.parquet"):
        assert (out / name).exists(), name
    params = pd.read_parquet(next((out / "records" / "deep-sigmoid").glob("params-*.parquet")))
    assert {"step", "layer", "param", "depth", "grad_norm"} <= set(params.columns)
    plots = {p.name for p in (out / "plots").glob("*.png")}
    assert {
        "training.png",
        "epochs-deep-sigmoid.png",
        "variants.png",
        "heatmap-deep-sigmoid.png",
        "first-layer.png",
    } <= plots
    assert all((out / "plots" / p).read_bytes().startswith(PNG) for p in plots)
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["seed"] == 1 and config["train"]["optimizer"] == "adam"
    assert config["seeds"] == [1, 2, 3, 4, 5]  # one seed can mislead on 100 points
    assert all("seeds" in v for v in obj["variants"]) and obj["story"]


def test_run_prints_tables_and_plot_redraws(tmp_path):
    out = tmp_path / "run"
    res = invoke(
        "run",
        "classification",
        "-q",
        "--variant",
        "deep-sigmoid",
        "--epochs",
        "2",
        "--out",
        str(out),
    )
    assert res.exit_code == 0
    assert "make_classification, 2 epochs of Adam" in res.output  # the closing sentence
    assert "first/last gradient ratio" in res.output and "(input)" in res.output
    assert "notebook estimate" in res.output and "Adam" in res.output
    for p in (out / "plots").glob("*.png"):
        p.unlink()
    res = invoke("plot", str(out))
    assert res.exit_code == 0
    assert len(list((out / "plots").glob("*.png"))) >= 4


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "mnist"], "expected one of california, classification"),
        (["run", "classification", "--variant", "deep"], "deep-sigmoid, shallow-sigmoid"),
        (["run", "classification", "--activation", "swish"], "sigmoid, tanh, relu"),
        (["run", "classification", "--init", "zeros"], "glorot_uniform"),
        (["run", "classification", "--optimizer", "lbfgs"], "sgd, momentum, adam"),
        (["run", "classification", "--depth", "0"], "--depth must be"),
        (["run", "classification", "--lr", "-1"], "--lr must be"),
        (["run", "classification", "--framework", "jax"], "torch, keras"),
        (["run", "classification", "--every", "0"], "--every"),
        (["run", "classification", "--seeds", "0"], "--seeds"),
    ],
)
def test_bad_values_exit_2_with_one_line(args, expected, tmp_path):
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "r")])
    assert res.exit_code == 2, res.output
    assert expected in res.output
    assert "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()  # rejected before any training


def test_plot_of_a_missing_or_corrupt_run_dir_is_one_line(tmp_path):
    res = CliRunner().invoke(main, ["plot", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "no such run directory" in res.output
    run = tmp_path / "run"
    assert (
        invoke(
            "run",
            "classification",
            "-q",
            "--variant",
            "deep-relu",
            "--epochs",
            "1",
            "--out",
            str(run),
        ).exit_code
        == 0
    )
    (run / "config.json").write_text("{not json")
    res = CliRunner().invoke(main, ["plot", str(run)])
    assert res.exit_code == 2 and "config.json" in res.output and "Traceback" not in res.output
    (run / "config.json").write_text("{}")
    part = next((run / "records").glob("*/params-*.parquet"))
    part.write_bytes(b"garbage")
    res = CliRunner().invoke(main, ["plot", str(run)])
    assert res.exit_code == 2 and part.name in res.output and len(res.output.splitlines()) == 1


def _no_download(monkeypatch, tmp_path):  # type: ignore[no-untyped-def]
    """No California anywhere: an empty data home (a cache in ~/scikit_learn_data, as
    scripts/demo.sh writes, must not count) and no download."""
    import sklearn.datasets

    empty = tmp_path / "empty_data_home"
    empty.mkdir()
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(empty))

    def offline(*a, **k):  # type: ignore[no-untyped-def]
        raise OSError("Data not found and `download_if_missing` is False")

    monkeypatch.setattr(sklearn.datasets, "fetch_california_housing", offline)


def test_missing_california_data_is_a_clear_line(monkeypatch, tmp_path):
    _no_download(monkeypatch, tmp_path)
    res = CliRunner().invoke(main, ["run", "california", "--out", str(tmp_path / "r")])
    assert res.exit_code == 1
    assert "--data-home" in res.output and "SCIKIT_LEARN_DATA" in res.output
    assert "Traceback" not in res.output


def test_demo_without_california_still_runs_classification(monkeypatch, tmp_path):
    _no_download(monkeypatch, tmp_path)
    res = invoke("demo", "-q", "--out", str(tmp_path), "--epochs", "1", "--seeds", "1")
    assert res.exit_code == 0
    assert "California experiment skipped" in res.output and "--data-home" in res.output
    assert (tmp_path / "classification" / "plots" / "variants.png").exists()


@pytest.mark.california
def test_demo_reproduces_both_experiments(california_home, tmp_path):
    res = invoke(
        "demo", "-q", "--out", str(tmp_path), "--data-home", str(california_home),
        "--epochs", "1", "--seeds", "2",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    for exp in ("classification", "california"):
        run = load_run(tmp_path / exp)
        assert run.status["status"] == "complete"
        assert (tmp_path / exp / "plots" / "variants.png").exists()
        assert (tmp_path / exp / "plots" / "training.png").exists()
        story = json.loads((tmp_path / exp / "summary.json").read_text())["story"]
        assert " ".join(story.split()) in " ".join(res.output.split())  # printed, as measured
    cal = json.loads((tmp_path / "california" / "summary.json").read_text())
    ratios = {v["name"]: v["first_last_ratio"] for v in cal["variants"]}
    assert ratios["sigmoid"] < 1e-5 and 0.05 < ratios["relu"] < 2


@pytest.mark.slow
@pytest.mark.california
def test_the_full_demo_tells_the_seed_notebooks_story(california_home, tmp_path):
    """End to end with the defaults: real training, both closing sentences agree with the runs."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "gradprobe", "demo", "-q", "--out", str(tmp_path),
         "--data-home", str(california_home)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    took = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    cal = json.loads((tmp_path / "california" / "summary.json").read_text())
    by = {v["name"]: v for v in cal["variants"]}
    base = load_run(tmp_path / "california").config["data"]["baseline_test_loss"]
    assert abs(by["sigmoid"]["test_loss"] / base - 1) < 0.03  # it predicts the mean
    assert by["relu"]["test_loss"] < 0.45 and by["sigmoid"]["first_last_ratio"] < 1e-5
    assert (
        "sigmoid's first layer gets" in cal["story"] and "no better than the mean" in cal["story"]
    )
    cls = json.loads((tmp_path / "classification" / "summary.json").read_text())
    by = {v["name"]: v for v in cls["variants"]}
    assert len(by["shallow-sigmoid"]["seeds"]["test_accuracy"]) == 5
    assert min(by["shallow-sigmoid"]["seeds"]["test_accuracy"]) > 0.9
    assert min(by["deep-sigmoid"]["seeds"]["test_accuracy"]) <= 0.6  # stuck in some seed
    for story in (cal["story"], cls["story"]):
        assert " ".join(story.split()) in " ".join(proc.stdout.split())
    print(f"full demo: {took:.1f} s")


@pytest.mark.california
def test_non_finite_loss_stops_with_step_and_layer_and_stays_plottable(california_home, tmp_path):
    out = tmp_path / "r"
    res = CliRunner().invoke(
        main,
        [
            "run",
            "california",
            "--variant",
            "relu",
            "--lr",
            "1",
            "--epochs",
            "30",
            "--rows",  # the notebook's 512 rows in one batch: 30 steps, every one recorded
            "512",
            "--batch-size",
            "0",
            "-q",
            "--data-home",
            str(california_home),
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 1
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "partial"
    assert "non-finite loss" in status["message"] and "layer '" in status["message"]
    run = load_run(out)
    assert run.table("params")["grad_nonfinite"].sum() > 0
    assert invoke("plot", str(out)).exit_code == 0


@pytest.mark.slow
def test_ctrl_c_saves_what_was_recorded(tmp_path):
    out = tmp_path / "r"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gradprobe",
            "run",
            "classification",
            "--variant",
            "deep-relu",
            "--epochs",
            "100000",
            "--every",  # every step recorded, so the records reach the interrupted step
            "1",
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    deadline = time.time() + 60
    while not (out / "config.json").exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(3.0)  # some training steps
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr.decode()
    assert b"Traceback" not in stderr
    assert b"interrupted" in stderr
    run = load_run(out)
    assert run.status["status"] == "partial"
    assert len(run.table("params")) > 0 and len(run.table("steps")) > 0
    assert run.table("params")["step"].max() >= run.table("steps")["step"].max() - 1
    res = subprocess.run([sys.executable, "-m", "gradprobe", "plot", str(out)], capture_output=True)
    assert res.returncode == 0


def test_run_takes_the_sweeps_model_and_training_options(tmp_path):
    out = tmp_path / "r"
    toml = tmp_path / "run.toml"
    toml.write_text("every = 2\n")
    res = invoke(
        "run", "classification", "-q", "--json", "--variant", "deep-relu", "--norm", "batch",
        "--clip", "1", "--epochs", "2", "--seeds", "2", "--config", str(toml), "--out", str(out),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    config = json.loads((out / "config.json").read_text())
    assert config["variants"][0]["model"]["norm"] == "batch"
    assert config["train"]["clip_norm"] == 1 and config["every"] == 2  # the file's every
    assert config["seeds"] == [0, 1]  # a normalised net's extra seed trains on its own
    assert sorted(set(load_run(out).table("epochs")["seed"])) == [0, 1]


def test_demo_time_counts_from_process_start() -> None:
    """The demo's printed time started at its command, after the interpreter and the imports
    (0.5-1 s): issue 14's budget counts from process start."""
    code = (
        "import time; time.sleep(0.6); from gradprobe.cli.run import process_age; "
        "print(process_age())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    age = float(out.stdout)
    assert 0.6 <= age < 30


def test_demo_gc_settings_are_restored_and_cycles_still_collected() -> None:
    """The demo freezes its imports out of the collector and collects rarely (full collections
    rescanned torch's objects: 1-1.3 s of CPU); cycles made meanwhile are still freed and the
    caller's thresholds come back (the frozen objects stay frozen: the final collections at exit
    skip them)."""
    import gc
    import weakref

    from gradprobe.cli.run import settled_gc

    before, enabled = gc.get_threshold(), gc.isenabled()

    class Node:
        pass

    with settled_gc():
        assert gc.get_freeze_count() > 0
        a, b = Node(), Node()
        a.other, b.other = b, a  # type: ignore[attr-defined]
        gone = weakref.ref(a)
        del a, b
        gc.collect()
        assert gone() is None
    assert gc.get_threshold() == before
    assert gc.isenabled() == enabled
