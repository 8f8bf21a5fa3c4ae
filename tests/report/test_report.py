"""The HTML report: structure (golden outline), escaping, partial runs, self-containedness."""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd

from gradprobe.report import render_report, write_report
from gradprobe.run import load_run

CLOCK = datetime(2026, 1, 1, tzinfo=UTC)
GOLDEN = Path(__file__).with_name("golden_outline.txt")
EVIL = "<script>alert(1)</script>"


class Outline(HTMLParser):
    """Headings (h1-h4) and section ids, in document order, whitespace-normalised."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self._tag: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("section", "header") and a.get("id"):
            self.lines.append(f"[{tag} #{a['id']}]")
        if tag in ("h1", "h2", "h3", "h4"):
            self._tag, self._text = tag, []

    def handle_data(self, data):
        if self._tag:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == self._tag:
            text = " ".join("".join(self._text).split())
            self.lines.append(f"{'  ' * (int(tag[1]) - 1)}{tag}: {text}")
            self._tag = None


def outline(html: str) -> str:
    p = Outline()
    p.feed(html)
    return "\n".join(p.lines) + "\n"


def test_report_structure_matches_the_golden_outline(small_html):
    html = small_html
    got = outline(html)
    if os.environ.get("GRADPROBE_UPDATE_GOLDEN"):
        GOLDEN.write_text(got)
    assert GOLDEN.exists(), f"{GOLDEN} is missing: rerun with GRADPROBE_UPDATE_GOLDEN=1"
    assert got == GOLDEN.read_text()
    assert "generated 2026-01-01T00:00:00+00:00" in html


def test_the_verdict_comes_first_and_names_each_variant(small_html):
    html = small_html
    verdict, findings = html.index('id="verdict"'), html.index('id="findings"')
    assert verdict < findings < html.index('id="comparison"') < html.index('id="config"')
    head = html[verdict:findings]
    assert "deep-sigmoid" in head and "vanishing" in head and "deep-relu-8" in head


def test_the_report_is_self_contained(small_html):
    html = small_html
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:|file:)?//""", html)
    assert "@import" not in html and not re.search(r"url\((?!#)", html)  # only url(#clip-id)
    charts = html.count('<img src="data:image/png;base64,')
    assert charts >= 10 and charts == html.count("<img")  # every chart inline, none linked
    assert "Content-Security-Policy" in html


def test_charts_are_deterministic_svg():
    from matplotlib.figure import Figure

    from gradprobe.report.charts import svg

    def draw():
        fig = Figure()
        ax = fig.add_subplot()
        ax.plot([1, 2, 3], label=EVIL)
        ax.legend()
        return svg(fig)

    a, b = draw(), draw()
    assert a == b and a.startswith("<svg") and "<script" not in a


def test_the_report_embeds_the_same_pngs_as_plots(small_run):
    import base64

    from gradprobe.views.plots import render_run_figures, save_run_plots

    run = load_run(small_run)
    figures = render_run_figures(run)
    save_run_plots(run, figures)
    html = render_report(run, now=CLOCK, figures=figures)
    for name in ("training.png", "variants.png", "epochs-deep-sigmoid.png"):
        data = (small_run / "plots" / name).read_bytes()
        assert base64.b64encode(data).decode() in html, name


def test_the_report_tells_the_story_with_the_runs_numbers(small_run, small_html):
    from markupsafe import escape

    run = load_run(small_run)
    story = run.summary["story"]
    assert story and str(escape(story)) in small_html
    ratio = run.summary["variants"][0]["first_last_ratio"]
    assert f"deep-sigmoid's first layer gets {ratio:.2g}" in story
    assert small_html.index('id="story"') < small_html.index('id="findings"')


def test_config_is_collapsed(small_html):
    config = small_html[small_html.index('id="config"') :]
    assert config.count("<details>") == 3 and "<pre>" in config


def _poison(run_dir: Path, dest: Path) -> Path:
    """A copy of the run whose experiment, variant and layer names are HTML."""
    shutil.copytree(run_dir, dest)
    cfg = json.loads((dest / "config.json").read_text())
    cfg["experiment"] = EVIL
    cfg["variants"][0]["name"] = EVIL
    cfg["environment"]["python"] = EVIL
    (dest / "config.json").write_text(json.dumps(cfg))
    for part in (dest / "records").glob("*/*.parquet"):
        frame = pd.read_parquet(part)
        frame["layer"] = frame["layer"].where(frame["depth"] != 0, EVIL)
        frame.to_parquet(part, index=False)
    return dest


def test_every_string_from_the_run_is_escaped(small_run, tmp_path):
    run = load_run(_poison(small_run, tmp_path / "evil"))
    assert EVIL in set(run.table("params")["layer"])
    html = render_report(run, now=CLOCK)
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_a_partial_run_says_so_and_still_reports(small_run, tmp_path):
    dest = tmp_path / "partial"
    shutil.copytree(small_run, dest)
    (dest / "status.json").unlink()
    (dest / "summary.json").unlink()
    html = render_report(dest, now=CLOCK)
    assert 'id="partial"' in html and "did not finish" in html
    assert "vanishing" in html


def test_an_empty_run_reports_nothing_recorded(small_run, tmp_path):
    dest = tmp_path / "empty"
    dest.mkdir()
    shutil.copy(small_run / "config.json", dest / "config.json")
    html = render_report(dest, now=CLOCK)
    assert "No gradients were recorded yet" in html and 'id="partial"' in html


def test_write_report_defaults_into_the_run_directory(small_run, small_html):
    path = write_report(small_run, now=CLOCK)
    assert path == small_run / "report.html" and path.read_text() == small_html


def test_layers_are_numbered_from_1_at_the_input_with_module_names_beside(small_html):
    """One numbering wherever a person reads it: the per-layer table's first row is layer 1 and
    names its module ('0') in a column of its own; findings say 'layer N (module ...)'."""
    table = small_html.split("Per-layer numbers, first recorded step", 1)[1]
    first_row = table.split("<tbody>", 1)[1].split("</tr>", 1)[0]
    cells = re.findall(r"<td>(.*?)</td>", first_row)
    assert cells[:2] == ["1", "0"], cells[:3]
    wheres = re.findall(r'<p class="muted">where: (.*?); steps:', small_html)
    assert wheres and all(w == "-" or w.startswith("layer") for w in wheres), wheres
