"""gradprobe predict: the table, --json, --phase-plot and one-line errors with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from gradprobe.cli import main


def _run(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, ["predict", *args])


def test_table_and_verdict() -> None:
    out = _run(
        "--activation", "sigmoid", "--depth", "9", "--width", "64", "--init", "glorot_uniform"
    )
    assert out.exit_code == 0, out.output
    assert "fan_in->width" in out.output and "verdict: vanishing" in out.output
    assert "depth scale" in out.output


def test_json_keys_and_numbers() -> None:
    out = _run("--activation", "sigmoid", "--depth", "9", "--outputs", "10", "--json")
    assert out.exit_code == 0, out.output
    d = json.loads(out.output)
    assert {"grad_norm_by_depth", "chi1", "depth_scale"} <= set(d)
    assert d["loss"] == "cross_entropy" and d["readout_coupling"] is True
    assert d["independent_grad_norm_by_depth"][0] == pytest.approx(5.19e-6, rel=0.002)
    assert d["grad_norm_by_depth"][0] == pytest.approx(5.2041e-6, rel=2e-4)
    assert d["chi1"] == pytest.approx(0.0557, abs=1e-4)


def test_loss_and_independent_readout() -> None:
    base = ["--activation", "relu", "--init", "he_uniform", "--depth", "9", "--outputs", "10"]
    coupled = json.loads(_run(*base, "--json").output)
    plain = json.loads(_run(*base, "--independent-readout", "--json").output)
    assert coupled["grad_norm_by_depth"][0] == pytest.approx(1.0722, rel=2e-4)
    assert plain["grad_norm_by_depth"][0] == pytest.approx(1.0) and not plain["readout_coupling"]
    mse = json.loads(_run(*base, "--loss", "mse", "--json").output)
    assert mse["loss"] == "mse" and mse["independent_grad_norm_by_depth"][0] == pytest.approx(1.0)
    out = _run(*base)
    assert "readout: cross_entropy, coupled" in out.output and "x 1.072" in out.output
    assert "typical net (geometric mean over nets): first/readout ratio 1.16" in out.output


def test_options_reach_the_prediction() -> None:
    args = [
        "--activation",
        "relu",
        "--depth",
        "3",
        "--inputs",
        "8",
        "--weight-var",
        "2",
        "--bias-var",
        "0",
        "--batch-size",
        "16",
        "--json",
    ]
    d = json.loads(_run(*args).output)
    assert d["widths"] == [8, 64, 64, 64, 1] and d["chi1"] == pytest.approx(1.0)
    assert d["batch_size"] == 16 and len(d["batch_grad_norm_by_depth"]) == 4


def test_phase_plot(tmp_path: Path) -> None:
    png = tmp_path / "phase.png"
    out = _run("--activation", "tanh", "--depth", "2", "--phase-plot", str(png))
    assert out.exit_code == 0, out.output
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--activation", "softsign"], "expected one of sigmoid, tanh, relu"),
        (["--init", "zeros"], "expected one of glorot_uniform"),
        (["--depth", "0"], "--depth must be a positive integer"),
        (["--width", "-3"], "--width must be a positive integer"),
        (["--activation", "relu", "--phase-plot", "x.png"], "expected one of tanh, sigmoid"),
        (["--loss", "hinge"], "expected one of cross_entropy"),
        (["--loss", "cross_entropy"], "needs >= 2 outputs"),
    ],
)
def test_bad_values_give_one_line_and_exit_2(args: list[str], needle: str) -> None:
    out = _run(*args)
    assert out.exit_code == 2
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], out.output
