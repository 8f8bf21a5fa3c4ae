"""Every docstring example in the theory, torch.predict and phase modules runs."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "gradprobe.theory",
    "gradprobe.theory._gauss",
    "gradprobe.theory.activations",
    "gradprobe.theory.batch",
    "gradprobe.theory.factors",
    "gradprobe.theory.init",
    "gradprobe.theory.meanfield",
    "gradprobe.theory.predict",
    "gradprobe.theory.readout",
    "gradprobe.theory.recursion",
    "gradprobe.theory.runs",
    "gradprobe.theory.spread",
    "gradprobe.theory.typical",
    "gradprobe.theory.verdicts",
    "gradprobe.views.phase",
    "gradprobe.torch.predict",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    if name.startswith("gradprobe.torch"):
        pytest.importorskip("torch")
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
