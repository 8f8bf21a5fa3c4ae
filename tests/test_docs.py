"""The documentation: the site builds with warnings as errors, and what the code cites exists."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
THEORY = REPO / "docs" / "theory.md"
# "theory.md 3.3", "theory.md section 9.2", "theory.md §9", "theory.md 9.1-9.2" (across line breaks)
CITATION = re.compile(r"theory\.md\s+(?:section\s+|§)?(\d+(?:\.\d+)?)(?:\s*-\s*(\d+(?:\.\d+)?))?")
DOC_PACKAGES = (
    "mkdocs",
    "material",
    "mkdocstrings",
    "mkdocstrings_handlers.python",
    "mkdocs_click",
)


def _missing_doc_packages() -> list[str]:
    missing = []
    for name in DOC_PACKAGES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(name)
    return missing


def cited_sections(text: str) -> set[str]:
    """Every theory.md section number cited in ``text`` (both ends of a range)."""
    return {n for m in CITATION.finditer(text) for n in m.groups() if n}


def theory_sections() -> set[str]:
    """The section numbers that docs/theory.md gives as heading anchors ({#s3.3})."""
    return set(re.findall(r"^#+ .*\{#s(\d+(?:\.\d+)?)\}\s*$", THEORY.read_text(), re.M))


def test_citation_pattern_reads_sections_ranges_and_line_breaks() -> None:
    text = "(theory.md section 3.4) theory.md 9.1-9.2 (theory.md\n    3.3) theory.md §9"
    assert cited_sections(text) == {"3.4", "9.1", "9.2", "3.3", "9"}


def test_every_theory_section_cited_in_the_code_is_a_heading_of_docs_theory_md() -> None:
    cited: dict[str, list[str]] = {}
    for path in sorted((REPO / "src" / "gradprobe").rglob("*.py")):
        for number in cited_sections(path.read_text()):
            cited.setdefault(number, []).append(str(path.relative_to(REPO)))
    assert cited, "no theory.md citation found in src/: the pattern no longer matches"
    missing = {n: files for n, files in cited.items() if n not in theory_sections()}
    assert not missing, f"sections cited but not in docs/theory.md: {missing}"


def test_readme_images_and_local_links_exist() -> None:
    readme = (REPO / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)\)", readme)
    local = [t for t in targets if "://" not in t]
    assert local, "the README links nothing local"
    missing = [t for t in local if not (REPO / t).exists()]
    assert not missing, f"README links to missing files: {missing}"


@pytest.mark.slow
def test_docs_site_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    missing = _missing_doc_packages()
    if missing:
        pytest.skip(f"docs extra not installed ({', '.join(missing)}): pip install -e '.[docs]'")
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(REPO / "mkdocs.yml")]
        + ["-d", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr[-4000:]
    for page in ("index.html", "theory/index.html", "cli/index.html", "api/index.html"):
        assert (site / page).is_file(), page
    api = (site / "api" / "index.html").read_text()
    assert "gradprobe.torch.monitor.watch" in api  # generated from the docstrings
    cli = (site / "cli" / "index.html").read_text()
    assert "gradprobe diagnose" in cli  # generated from the click help
