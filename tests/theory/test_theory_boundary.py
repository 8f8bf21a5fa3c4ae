"""The theory package is pure numpy: importing it (and running it) never imports torch or TF."""

from __future__ import annotations

import subprocess
import sys

import gradprobe.theory


def test_theory_does_not_import_torch_or_tensorflow() -> None:
    code = (
        "import sys, gradprobe.theory as t; t.predict_mlp([8, 16, 1], 'tanh', batch_size=4); "
        "import gradprobe.views.phase; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow', 'keras')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_all_is_complete() -> None:
    public = {n for n in dir(gradprobe.theory) if not n.startswith("_")}
    modules = {
        "activations",
        "batch",
        "factors",
        "init",
        "meanfield",
        "predict",
        "readout",
        "spread",
        "typical",
        "recursion",
        "runs",
        "verdicts",
        "annotations",
    }
    assert public - modules == set(gradprobe.theory.__all__)
