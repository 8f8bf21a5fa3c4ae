"""Every docstring example of the diagnosis runs."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import gradprobe.diagnosis

MODULES = ["gradprobe.diagnosis"] + [
    m.name for m in pkgutil.walk_packages(gradprobe.diagnosis.__path__, "gradprobe.diagnosis.")
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
