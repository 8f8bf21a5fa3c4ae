"""The integrations stay optional: nothing imports a framework until asked, and a missing
framework is a MissingExtraError that says what to install."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from gradprobe.errors import MissingExtraError

INTEGRATIONS = {"lightning": "lightning", "transformers": "transformers"}  # module -> package


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return set(out.stdout.split())


def test_importing_gradprobe_imports_no_training_framework():
    mods = _modules_after("import gradprobe, gradprobe.integrations._common")
    assert not mods & {"lightning", "pytorch_lightning", "transformers", "accelerate", "torch"}


@pytest.mark.parametrize("module", sorted(INTEGRATIONS))
def test_a_missing_framework_is_a_missing_extra_error_with_the_install_hint(module, monkeypatch):
    package = INTEGRATIONS[module]
    for name in list(sys.modules):
        if name == package or name.startswith(package + "."):
            monkeypatch.setitem(sys.modules, name, None)  # importing it now raises ImportError
    monkeypatch.setitem(sys.modules, package, None)
    monkeypatch.delitem(sys.modules, f"gradprobe.integrations.{module}", raising=False)
    with pytest.raises(MissingExtraError, match=rf"pip install 'gradprobe\[{package}\]'") as err:
        importlib.import_module(f"gradprobe.integrations.{module}")
    assert isinstance(err.value, ImportError)
    assert f"gradprobe.integrations.{module}" in str(err.value)
