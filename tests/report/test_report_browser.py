"""The report in headless Chromium: loads with no console error and no network request, the
charts are there, nothing overflows a phone's width; screenshots are kept for people to look at."""

from __future__ import annotations

import pytest
from cdp_client import find_chromium, open_page

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        find_chromium() is None,
        reason="headless Chromium not installed (Debian: apt-get install -y chromium)",
    ),
]


def test_report_opens_offline_without_errors(small_html, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(small_html, encoding="utf-8")
    url = page.resolve().as_uri()
    shots = {"laptop": (1280, 900), "phone": (390, 844)}
    got = open_page(url, shots, tmp_path)
    foreign = [u for u in got["requests"] if u != url and not u.startswith("data:")]
    assert foreign == []
    assert got["errors"] == []
    assert got["svgs"] >= 10
    assert got["overflow_at_last_width"] is False  # no sideways scrolling at 390 px
    for path in got["shots"].values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
