"""The zoo's table: per training stack, how far gradprobe's numbers are from a same-step reference.

    .venv/bin/python benchmarks/zoo_table.py

For every single-process setup of tests/torch/zoo.py: the largest relative error of a recorded
``grad_norm`` against ``p.grad`` in float64 taken in the same step, the largest relative error of
``update_norm`` against the weights' real change, and what ``diagnose`` says (warnings and errors;
info findings in brackets). Then the broken nets and the finding each one gets. The distributed
setups run in tests/torch/test_zoo_dist.py.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "torch"))

import zoo  # noqa: E402

import gradprobe  # noqa: E402


def findings_text(monitor: object) -> str:
    found = gradprobe.diagnose(monitor)
    serious = [f.code for f in found if f.severity != "info"]
    info = [f.code for f in found if f.severity == "info"]
    text = ", ".join(serious) or "none"
    return text + (f" [{', '.join(info)}]" if info else "")


def main() -> None:
    warnings.simplefilter("ignore")
    print("| setup | max rel. error grad_norm | max rel. error update_norm | findings |")
    print("|---|---|---|---|")
    for name, build in zoo.HEALTHY.items():
        r = build()
        print(
            f"| {name} | {r.max_rel_error():.1e} | {r.max_update_error():.1e} "
            f"| {findings_text(r.monitor)} |"
        )
    print()
    print("| broken net | expected | findings |")
    print("|---|---|---|")
    for name, (build, code) in zoo.BROKEN.items():
        print(f"| {name} | {code} | {findings_text(build())} |")


if __name__ == "__main__":
    main()
