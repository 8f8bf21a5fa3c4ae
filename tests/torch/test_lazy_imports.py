"""Watching a plain model (trained without torch.optim, as the demo's experiments are) imports
none of torch's distributed packages (their import pulls in sympy: 0.3-0.6 s of a short run),
yet FSDP and DTensor models are still recognised: they cannot exist without those packages
imported (tests/torch/test_zoo_dist.py)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
import torch
from torch import nn
import gradprobe
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
with gradprobe.watch(model, every=1) as mon:  # torch.optim itself imports torch._dynamo
    for _ in range(2):
        model.zero_grad()
        model(torch.randn(16, 4)).pow(2).mean().backward()
        mon.step()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
assert len(mon.to_pandas()) == 8
print(sorted(m for m in ("torch.distributed.tensor", "torch.distributed.fsdp") if m in sys.modules))
"""


def test_watching_a_plain_model_imports_no_fsdp_nor_dtensor() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
