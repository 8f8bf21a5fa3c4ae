#!/usr/bin/env bash
# Set up .venv with every extra and run the whole test suite (arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
# torch==2.13.0: a local CPU wheel where one is offered (as on our CI), the ordinary wheel elsewhere
.venv/bin/python -m pip install -q "torch==2.13.0" -e ".[dev]"
# headless Chromium for the HTML report's browser test (Debian/Ubuntu as root; skipped elsewhere)
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
    && [ "$(id -u)" = 0 ]; then
  { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
    || echo "warning: could not install chromium; the report's browser test will be skipped" >&2
fi
exec .venv/bin/python -m pytest "$@"
