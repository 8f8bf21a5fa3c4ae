"""Figures as inline SVG for HTML pages (the sweep report uses it; the run report inlines PNGs).

Text stays text (``svg.fonttype = none``, generic font family) and ids are salted with a
constant, so the same figure gives the same SVG; matplotlib's SVG writer escapes every string.
No pyplot: the caller's backend is never changed.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

from matplotlib import rc_context
from matplotlib.figure import Figure

_RC: Any = {"svg.fonttype": "none", "svg.hashsalt": "gradprobe", "font.family": "sans-serif"}


def svg(fig: Figure) -> str:
    """The figure as an ``<svg>`` element (XML prolog and doctype dropped); a figure pyplot
    manages is closed after."""
    buf = io.StringIO()
    with rc_context(_RC):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    if getattr(fig.canvas, "manager", None) is not None:
        import matplotlib.pyplot as plt

        plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def relative(values: Sequence[float]) -> list[float]:
    """values / last value (NaN when the last is not positive)."""
    v = [float(x) for x in values]
    last = v[-1] if v else math.nan
    return [x / last if last > 0 else math.nan for x in v]
