"""The side-by-side benchmark runs, and a peer that is not installed is skipped with a note."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench_peers(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    module = importlib.import_module("bench_peers")
    from torch import nn

    tiny = module.Model("tiny 2x16 ReLU, batch 8", 2, 16, 4, nn.ReLU, 8, 2, 3)
    monkeypatch.setitem(module.MODELS, "small", [tiny])
    return module


@pytest.mark.slow  # imports Lightning, gradlens, gradviz, Cockpit: 5-15 s on a shared machine
def test_bench_peers_quick_prints_one_row_per_setting_and_skips_an_absent_peer(
    bench_peers, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "gradviz", None)  # import gradviz now raises ImportError
    bench_peers.main(["--quick", "--models", "small"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ")][1:]  # minus the header
    labels = [s.label for s in bench_peers.settings(quick=True)]
    assert [r.split(" | ")[0][2:] for r in rows] == labels
    by_label = dict(zip(labels, rows, strict=True))
    assert by_label[next(x for x in labels if x.startswith("gradviz"))].endswith("| skipped |")
    assert "skipped: gradviz is not installed" in out
    assert 'pip install "gradprobe[bench]"' in out
    for label in labels:
        if not label.startswith(("gradviz", "gradlens", "Cockpit", "per-parameter")):
            assert by_label[label].rstrip(" |").endswith("x"), by_label[label]
    assert "load average" in out
