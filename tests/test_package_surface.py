"""The public surface: import boundaries, __all__, lint and types."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import gradprobe

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


@pytest.mark.parametrize(
    "code",
    [
        "import gradprobe",
        "import gradprobe.records, gradprobe.run, gradprobe.errors",
        "import gradprobe.experiments.spec, gradprobe.experiments.data",
        "import gradprobe.experiments.runner, gradprobe.experiments.init",
        "import gradprobe.views.plots",
        "import gradprobe.theory",
        "from gradprobe.run import load_run; from gradprobe.views.plots import save_run_plots",
    ],
)
def test_the_core_imports_neither_torch_nor_tensorflow(code):
    mods = _modules_after(code)
    assert "torch" not in mods
    assert "tensorflow" not in mods and "keras" not in mods


def test_framework_names_load_on_first_use():
    mods = _modules_after("import gradprobe\ngradprobe.watch")
    assert "torch" in mods and "tensorflow" not in mods


def test_all_is_complete_and_every_name_resolves():
    public = {n for n in dir(gradprobe) if not n.startswith("_")} - {"annotations", "importlib"}
    modules = {
        "errors",
        "run",
        "records",
        "torch",
        "theory",
        "experiments",
        "views",
        "cli",
        "diagnosis",
        "report",
        "keras",
        "lab",
        "storage",
        "stats",
        "budget",
        "tensorboard",
        "integrations",
        "Any",
    }
    assert public - modules <= set(gradprobe.__all__), public - set(gradprobe.__all__)
    for name in gradprobe.__all__:
        assert getattr(gradprobe, name) is not None


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        gradprobe.nope  # noqa: B018


@pytest.mark.skipif(
    shutil.which("ruff") is None and not (Path(sys.executable).parent / "ruff").exists(),
    reason="ruff is not installed (pip install 'gradprobe[test]')",
)
def test_ruff_is_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    root = SRC.parent
    res = subprocess.run(
        [ruff, "check", "src", "tests", "benchmarks", "examples"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_diagnose_is_the_function_even_after_its_subpackage_is_imported():
    code = (
        "import gradprobe.diagnosis.rules, gradprobe.experiments.runner, gradprobe\n"
        "assert callable(gradprobe.diagnose), type(gradprobe.diagnose)\n"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr
