"""Issue 14: terminal output that reads well piped (no mid-word break, nothing cut with "..."),
one exit status for bad input (2: missing, empty, corrupt run dirs), depths in the JSON, and a
partly missing run said to be partly missing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gradprobe.cli import main
from gradprobe.cli._output import num, paragraph


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    from gradprobe.experiments.runner import run_experiment
    from gradprobe.experiments.spec import resolve

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = resolve("classification", variant="deep-sigmoid,deep-relu-8", seed=0)
        out = tmp_path_factory.mktemp("runs") / "classification"
        run_experiment(config, out)
    finally:
        torch.set_num_threads(before)
    return out


def _flat(text: str) -> str:
    return " ".join(text.split())


def _assert_whole(output: str, findings: list[dict]) -> None:
    """Each summary, explanation and remedy appears whole: a mid-word break or a "..." cut
    would split or shorten it."""
    flat = _flat(output)
    assert "..." not in output and "\u2026" not in output
    for f in findings:
        assert _flat(f["summary"]) in flat
        assert _flat(f["explanation"]) in flat
        for r in f["remedies"][:3]:
            assert _flat(r["why"]) in flat


def _findings(run: Path) -> list[dict]:
    res = CliRunner().invoke(main, ["diagnose", "--json", str(run)])
    assert res.exit_code == 0, res.output
    return [f for v in json.loads(res.stdout)["variants"] for f in v["findings"]]


def test_diagnose_output_is_never_cut_nor_broken_mid_word_with_clirunner(small_run):
    res = CliRunner().invoke(main, ["diagnose", str(small_run)])
    assert res.exit_code == 0, res.output
    _assert_whole(res.output, _findings(small_run))
    assert max(len(line) for line in res.output.splitlines()) <= 100


def test_diagnose_piped_to_a_subprocess_pipe_without_columns(small_run):
    """stdout is a pipe and COLUMNS is unset: rich used to wrap at 80 columns mid-word."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.run(
        [sys.executable, "-m", "gradprobe", "diagnose", str(small_run)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    _assert_whole(proc.stdout, _findings(small_run))
    lines = proc.stdout.splitlines()
    assert all(len(line) <= 100 for line in lines)
    continuation = [x for x in lines if x and not x.startswith((" ", "deep-"))]
    assert continuation == []  # every continuation line keeps its indent


def test_json_findings_carry_depths_beside_layers(small_run):
    for f in _findings(small_run):
        assert len(f["depths"]) == len(f["layers"]) or f["layers"] == []
        assert all(isinstance(d, int) and d >= 1 for d in f["depths"])


def test_missing_empty_and_corrupt_run_dirs_exit_2_with_one_whole_line(small_run, tmp_path):
    runner = CliRunner()
    missing = runner.invoke(main, ["diagnose", str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(main, ["diagnose", str(tmp_path / "empty")])
    (tmp_path / "no_records").mkdir()
    (tmp_path / "no_records" / "config.json").write_text('{"variants": []}')
    no_records = runner.invoke(main, ["diagnose", str(tmp_path / "no_records")])
    corrupt = tmp_path / "corrupt"
    shutil.copytree(small_run, corrupt)
    part = next((corrupt / "records").glob("*/params-*.parquet"))
    part.write_bytes(b"not parquet" * 40)
    bad = runner.invoke(main, ["diagnose", str(corrupt)])
    report = runner.invoke(main, ["report", str(corrupt)])
    for res in (missing, empty, no_records, bad, report):
        assert res.exit_code == 2, res.output
        assert res.output.count("\n") == 1 and "Traceback" not in res.output
    assert part.name in bad.output
    assert bad.output.rstrip().endswith("delete it to load the rest of the run")


def test_a_deleted_variant_is_named_in_a_note(small_run, tmp_path):
    dest = tmp_path / "partly"
    shutil.copytree(small_run, dest)
    shutil.rmtree(dest / "records" / "deep-relu-8")
    res = CliRunner().invoke(main, ["diagnose", str(dest)])
    assert res.exit_code == 0, res.output
    notes = [x for x in res.stderr.splitlines() if "deep-relu-8" in x]
    assert len(notes) == 1 and notes[0].startswith("note: variant 'deep-relu-8' has no records")
    out = json.loads(CliRunner().invoke(main, ["diagnose", "--json", str(dest)]).stdout)
    assert out["missing_variants"] == ["deep-relu-8"]


def test_check_table_numbers_layers_from_1_and_names_modules():
    res = CliRunner().invoke(main, ["check", "classification", "--variant", "deep-sigmoid"])
    assert res.exit_code == 0, res.output
    header = next(x for x in res.output.splitlines() if "module" in x)
    assert "layer" in header
    assert "1 (input)" in res.output and "(output)" in res.output
    out = (
        CliRunner()
        .invoke(main, ["check", "classification", "--variant", "deep-sigmoid", "--json"])
        .stdout
    )
    v = json.loads(out)["variants"][0]
    assert [r["layer_number"] for r in v["table"]] == list(range(1, len(v["table"]) + 1))
    assert v["findings"][0]["depths"][0] == 1


def test_numbers_print_with_a_few_significant_digits():
    assert num(0.010000000000000004) == "0.01"
    assert num(0.1 + 0.2) == "0.3"
    assert num(None) == "-" and num(float("nan")) == "-" and num(float("inf")) == "inf"


def test_paragraph_never_breaks_a_long_word():
    word = "activation=sigmoid_with_a_very_long_name"
    text = paragraph(f"the {word} layer", indent=2, width=24, hanging=4)
    assert word in text.split()
