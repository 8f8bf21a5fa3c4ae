"""gradprobe sweep / remedies from the shell: JSON, spec files, estimates, escaping."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from gradprobe.cli import main


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, list(args))


def test_sweep_json_summary_and_estimate(tmp_path):
    out = tmp_path / "s"
    res = invoke(
        "sweep", "classification", "--depth", "2,6", "--seeds", "2", "--out", str(out), "--json"
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["status"] == "complete" and summary["cells"] == 2
    assert [c["label"] for c in summary["cells_summary"]] == ["depth=2", "depth=6"]
    assert "2 cells x 2 seeds" in res.stderr and "estimated" in res.stderr
    res = invoke(
        "sweep", "classification", "--depth", "2,6", "--seeds", "2", "--out", str(out), "-q"
    )
    assert "(2 already finished" in res.stderr and res.exit_code == 0


def test_remedies_ranks_the_catalogue_by_outcome_then_gradient_health(tmp_path):
    res = invoke(
        "remedies", "classification", "--variant", "deep-sigmoid", "--only",
        "baseline,relu_he,batch_norm", "--seeds", "2", "--out", str(tmp_path), "--json",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    ranking = json.loads(res.stdout)["ranking"]
    assert {r["remedy"] for r in ranking} == {"baseline", "relu_he", "batch_norm"}
    assert ranking[-1]["remedy"] == "baseline"  # deep sigmoid stays at chance: last
    assert (tmp_path / "plots" / "remedy_ranking.png").exists()


def test_spec_file_sweep_and_bad_spec_file(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text(
        'data = "make_moons"\ndepth = [2]\nepochs = 1\nseeds = 1\n[data_params]\nn_samples = 80\n'
    )
    res = invoke("sweep", str(spec), "--out", str(tmp_path / "o"), "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["task"] == "binary"
    spec.write_text('data = "make_moons"\nnorm = ["group"]\n')
    res = invoke("sweep", str(spec), "--out", str(tmp_path / "o2"))
    assert res.exit_code == 2
    assert f"{spec}: key 'norm': got 'group', expected one of none, batch, layer" in res.output


def test_report_escapes_strings_from_the_data(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "<b>evil.csv"
    pd.DataFrame({"a": rng.normal(size=40), "y": rng.normal(size=40)}).to_csv(path, index=False)
    out = tmp_path / "s"
    res = invoke("sweep", "--data", str(path), "--target", "y", "--depth", "2,3", "--epochs", "1",
                 "--seeds", "1", "--out", str(out), "-q")  # fmt: skip
    assert res.exit_code == 0, res.output
    html = (out / "report.html").read_text()
    assert "&lt;b&gt;evil.csv" in html and "<b>evil" not in html
    assert "<script" not in html


def test_reading_a_sweep_needs_no_torch(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys, gradprobe.lab as L, gradprobe.lab.plots, gradprobe.lab.report; "
        "L.parse({'data': 'classification'}); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_sweep_estimate_is_within_2x_of_the_time_taken(tmp_path):
    # estimates used to be 2-8x low: they left out recording, evaluation, plots and start-up
    import re
    import subprocess
    import sys
    import time
    from pathlib import Path

    exe = Path(sys.executable).with_name("gradprobe")
    args = [str(exe), "sweep", "classification", "--depth", "2,4", "--seeds", "2", "-q",
            "--out", str(tmp_path)]  # fmt: skip
    t0 = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True, timeout=300, check=True)
    took = time.perf_counter() - t0
    est = float(re.search(r"estimated ([\d.]+) s", out.stderr).group(1))  # type: ignore[union-attr]
    assert est / 2 <= took <= est * 2, (est, took)
