"""gradprobe diagnose / report / check from the shell, and bad run directories."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from gradprobe.cli import main


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_diagnose_prints_the_verdict_and_findings(small_run):
    r = invoke("diagnose", str(small_run))
    assert r.exit_code == 0, r.output
    assert "deep-sigmoid: will not train well" in r.output and "vanishing" in r.output


def test_diagnose_json(small_run):
    r = invoke("diagnose", str(small_run), "--json")
    out = json.loads(r.output)
    first = out["variants"][0]
    assert first["name"] == "deep-sigmoid" and first["findings"][0]["code"] == "vanishing"
    assert out["partial"] is False


def test_report_writes_the_file_and_prints_its_path(small_run, tmp_path, monkeypatch):
    from gradprobe.cli import diagnose as cli_diagnose

    calls = []
    monkeypatch.setattr("gradprobe.report.write_report", lambda run, out: calls.append(out) or out)
    r = invoke("report", str(small_run), "-o", str(tmp_path / "r.html"))
    assert r.exit_code == 0, r.output
    assert r.output.strip() == str(tmp_path / "r.html") and calls
    assert cli_diagnose.report_cmd.name == "report"


def test_missing_run_dir_is_one_line_naming_it(tmp_path):
    r = invoke("diagnose", str(tmp_path / "nope"))
    assert r.exit_code == 2  # a path that is not there is a usage error
    assert r.output.count("\n") == 1 and "nope" in r.output and "no such run directory" in r.output


def test_corrupt_records_name_the_file(small_run, tmp_path):
    dest = tmp_path / "corrupt"
    shutil.copytree(small_run, dest)
    part = next((dest / "records").glob("*/params-*.parquet"))
    part.write_bytes(b"not parquet")
    r = invoke("report", str(dest))
    assert r.exit_code == 2 and r.output.count("\n") == 1  # a bad input, like a missing dir
    assert part.name in r.output and "corrupt" in r.output


def test_partial_run_is_diagnosed_and_said_to_be_partial(small_run, tmp_path):
    dest = tmp_path / "partial"
    shutil.copytree(small_run, dest)
    (dest / "status.json").unlink()
    r = CliRunner().invoke(main, ["diagnose", str(dest)])
    assert r.exit_code == 0 and "vanishing" in r.output
    assert "partial run" in r.output


@pytest.mark.parametrize("as_json", [False, True])
def test_check_a_built_in_experiment(as_json):
    pytest.importorskip("torch")
    args = ["check", "classification", "--variant", "deep-sigmoid,deep-relu-8"]
    r = invoke(*args, *(["--json"] if as_json else []))
    assert r.exit_code == 0, r.output
    if as_json:
        out = json.loads(r.output)
        assert [f["code"] for f in out["variants"][0]["findings"]] == ["vanishing"]
        assert out["variants"][1]["findings"] == []
        assert len(out["variants"][0]["table"]) == 9
    else:
        assert "deep-sigmoid: will not train well: vanishing" in r.output
        assert "deep-relu-8: healthy" in r.output


def test_check_rejects_bad_options():
    r = invoke("check", "classification", "--activation", "nope")
    assert r.exit_code == 2 and "unknown activation 'nope'" in r.output
