"""The examples run: the README's quickstart prints what the README shows, and the tutorial
notebook runs top to bottom in a real Jupyter kernel."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def readme_block(heading: str, language: str) -> str:
    """The first ``language`` code block after the README heading that starts with ``heading``."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index(f"## {heading}") :]
    match = re.search(rf"```{language}\n(.*?)```", section, re.S)
    assert match, f"no {language} block after '## {heading}' in README.md"
    return match.group(1)


def code_lines(text: str) -> list[str]:
    """Non-blank lines, the module docstring left out."""
    text = re.sub(r'^""".*?"""\n', "", text, flags=re.S)
    return [line for line in text.splitlines() if line.strip()]


def shape(text: str) -> list[str]:
    """Lines with every number replaced by '#': the wording, not the last digits."""
    return [NUMBER.sub("#", line) for line in text.strip().splitlines()]


def test_readme_example_is_examples_quickstart() -> None:
    readme_code = readme_block("Example", "python")
    assert code_lines(readme_code) == code_lines((EXAMPLES / "quickstart.py").read_text())


def test_docs_home_shows_the_readme_output() -> None:
    index = (REPO / "docs" / "index.md").read_text()
    assert readme_block("Example", "text") in index


@pytest.mark.slow
def test_quickstart_prints_the_output_the_readme_shows(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    shown = readme_block("Example", "text")
    assert shape(done.stdout) == shape(shown), (
        "README.md shows another output than examples/quickstart.py prints; paste its output:\n"
        + done.stdout
    )
    assert (tmp_path / "gradients.png").stat().st_size > 10_000


@pytest.mark.slow
def test_tutorial_notebook_runs_top_to_bottom_in_a_jupyter_kernel(tmp_path: Path) -> None:
    for name in ("nbclient", "nbformat", "ipykernel"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} not installed: pip install -e '.[test]'")
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(EXAMPLES / "tutorial.ipynb", as_version=4)
    started = time.perf_counter()
    NotebookClient(
        notebook,
        timeout=120,  # per cell
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    elapsed = time.perf_counter() - started
    outputs = "".join(
        out.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )
    assert "sigmoid: chi1 =" in outputs and "relu-he: chi1 =" in outputs
    images = [
        out
        for cell in notebook.cells
        for out in cell.get("outputs", [])
        if "image/png" in out.get("data", {})
    ]
    assert len(images) == 2, "the notebook's two figures are not shown inline"
    assert elapsed < 240, f"the tutorial took {elapsed:.0f} s; keep it small"
