"""mkdocs hook: docstrings use Sphinx roles (:func:`watch`, :class:`~gradprobe.Monitor`) and
literal-block markers ("Example::"); render the roles as the code spans they name and the markers
as one colon."""

from __future__ import annotations

import re
from typing import Any

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj):<code>(~?)([^<]+)</code>")


def _name(match: re.Match[str]) -> str:
    short, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if short else target}</code>"


def on_page_content(html: str, **_: Any) -> str:
    return ROLE.sub(_name, html).replace("::</p>", ":</p>")
