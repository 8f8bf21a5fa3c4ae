"""Rows are built many steps at once: the tables must not depend on when that happens."""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

import gradprobe


class Branchy(nn.Module):
    """A side branch used only on some steps: the set of parameters with gradients changes."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.side = nn.Linear(8, 8)
        self.out = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor, use_side: bool) -> torch.Tensor:
        h = torch.tanh(self.a(x))
        if use_side:
            h = torch.relu(self.side(h))
        return self.out(h)


def _train(limit: int, steps: int = 150) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    torch.manual_seed(0)
    model = Branchy()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = gradprobe.watch(model, opt, every=1)
    mon._rows.limit = limit
    g = torch.Generator().manual_seed(1)
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        x = torch.randn(16, 4, generator=g)
        model(x, use_side=(step // 30) % 2 == 1).pow(2).mean().backward()
        opt.step()
    text = repr(mon)
    params, layers = mon.to_pandas(), mon.to_pandas("layers")
    mon.detach()
    return params, layers, text


def test_tables_do_not_depend_on_how_many_steps_wait() -> None:
    p1, l1, r1 = _train(limit=1)
    p64, l64, r64 = _train(limit=64)
    pd.testing.assert_frame_equal(p1, p64)
    pd.testing.assert_frame_equal(l1, l64)
    assert r1 == r64  # the repr counts rows still waiting
    assert p64["step"].is_monotonic_increasing and l64["step"].is_monotonic_increasing
    assert p64["step"].nunique() == 150
    # the side branch has rows exactly on the steps that used it
    side_steps = set(p64.loc[p64["layer"] == "side", "step"])
    assert side_steps == {s for s in range(150) if (s // 30) % 2 == 1}
    assert set(l64.loc[l64["layer"] == "side", "step"]) == side_steps


def test_flush_writes_waiting_rows(tmp_path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradprobe.watch(model, opt, every=1, log_dir=tmp_path) as mon:
        for _ in range(5):
            opt.zero_grad()
            model(torch.randn(8, 3)).sum().backward()
            opt.step()
        mon.flush()
        written = pd.concat(pd.read_parquet(p) for p in sorted(tmp_path.glob("params-*.parquet")))
    assert sorted(written["step"].unique()) == [0, 1, 2, 3, 4]
    assert len(written) == 5 * 4
