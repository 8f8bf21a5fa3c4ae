#!/usr/bin/env bash
# Set up .venv and run `gradprobe demo`: both seed experiments, plots, tables and reports.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q "torch==2.13.0" -e ".[torch]"
# scikit-learn downloads California Housing on first use; offline, build its cache from the raw
# file when this checkout sits beside the project's shared/ folder
data_home="${SCIKIT_LEARN_DATA:-$HOME/scikit_learn_data}"
raw_script=../shared/data/california_housing/make_sklearn_cache.py
if [ ! -f "$data_home/cal_housing_py3.pkz" ] && [ -f "$raw_script" ]; then
  .venv/bin/python "$raw_script" "$data_home"
fi
.venv/bin/gradprobe demo --data-home "$data_home" "$@"
echo
echo "The command line is .venv/bin/gradprobe (or run: source .venv/bin/activate), e.g."
echo "  .venv/bin/gradprobe diagnose RUN_DIR    .venv/bin/gradprobe --help"
