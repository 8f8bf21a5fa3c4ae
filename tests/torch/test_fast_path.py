"""The in-place reading of a recorded step (ParamPass + slab rows) gives the same records, bit
for bit, as the general path it short-cuts, for every optimizer kind and the steps it leaves to
the general path (a NaN gradient, a missing gradient, rows read between steps)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import gradprobe
from gradprobe.torch import _native
from gradprobe.torch._native import ParamPass
from gradprobe.torch._rows import PendingRows

pytestmark = pytest.mark.skipif(not _native.available(), reason="C reductions not built")


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Sigmoid(), nn.Linear(7, 3), nn.ReLU(), nn.Linear(3, 1))


def _opt(kind: str, model: nn.Module) -> torch.optim.Optimizer | None:
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.05)
    if kind == "momentum":
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    if kind == "adam":
        return torch.optim.Adam(model.parameters(), lr=1e-3)
    return None


def _train(kind: str, fast: bool, monkeypatch: pytest.MonkeyPatch, **kw) -> dict[str, pd.DataFrame]:
    commits = []
    if fast:
        commit = PendingRows.commit
        monkeypatch.setattr(PendingRows, "commit", lambda s, *a: commits.append(a) or commit(s, *a))
    else:
        monkeypatch.setattr(ParamPass, "read", lambda self, grads, out: False)
    model = _model()
    opt = _opt(kind, model)
    gen = torch.Generator().manual_seed(1)
    frames = []
    with gradprobe.watch(model, opt, **kw) as mon:
        for step in range(12):
            if opt is not None:
                opt.zero_grad(set_to_none=step % 2 == 0)
            else:
                model.zero_grad()
            x = torch.randn(16, 5, generator=gen)
            loss = model(x).pow(2).mean()
            loss.backward()
            if step == 10:  # a NaN gradient: the general path counts it
                model[0].weight.grad[0, 0] = float("nan")
            if step == 6:  # a parameter without a gradient
                model[2].bias.grad = None
            if step == 8:
                frames.append(mon.to_pandas())  # rows made between steps
            if opt is not None:
                opt.step()
            else:
                mon.step()
        out = {t: mon.to_pandas(t) for t in ("params", "layers")}
    monkeypatch.undo()
    assert bool(commits) == fast  # the fast path ran (or was kept out)
    return out


@pytest.mark.parametrize("kind", ["sgd", "momentum", "adam", "none"])
@pytest.mark.parametrize("kw", [{"every": 1}, {"every": 1, "activations": False}, {}])
def test_fast_path_records_match_general_path(kind, kw, monkeypatch):
    fast = _train(kind, True, monkeypatch, **kw)
    slow = _train(kind, False, monkeypatch, **kw)
    for table in fast:
        pd.testing.assert_frame_equal(fast[table], slow[table], check_exact=True)
    assert len(fast["params"]) > 0
    assert fast["params"]["grad_nonfinite"].max() >= 1


def test_param_pass_reads_like_moments_and_sq_norms():
    torch.manual_seed(0)
    ws = [torch.randn(3, 4), torch.randn(5), torch.randn(2, 2, 2)]
    gs = [torch.randn_like(w) for w in ws]
    ps = ParamPass(ws)
    out = np.full(5 * len(ws), np.nan)
    assert ps.read(gs, out.ctypes.data)
    np.testing.assert_array_equal(out[: 4 * len(ws)].reshape(-1, 4), _native.moments(gs))
    np.testing.assert_array_equal(out[4 * len(ws) :], _native.sq_norms(ws))


@pytest.mark.parametrize(
    "bad",
    [
        lambda g: None,
        lambda g: g.t().contiguous().t() if g.ndim == 2 else g[::1].expand(2, *g.shape)[0].t(),
        lambda g: g.double(),
        lambda g: g.to_sparse(),
        lambda g: torch.zeros(g.numel() + 1),
    ],
    ids=["missing", "not-contiguous", "dtype", "sparse", "size"],
)
def test_param_pass_declines_gradients_it_cannot_read(bad):
    ws = [torch.randn(3, 4), torch.randn(5)]
    gs = [torch.randn_like(w) for w in ws]
    gs[0] = bad(gs[0])
    out = np.zeros(10)
    assert not ParamPass(ws).read(gs, out.ctypes.data)
    assert not out.any()  # nothing written


def test_param_pass_update_norms_match_sq_norms_and_sq_dists():
    torch.manual_seed(0)
    ws = [torch.randn(3, 4), torch.randn(5)]
    before = [w + 0.1 * torch.randn_like(w) for w in ws]
    ps = ParamPass(ws)
    out = np.zeros(2)
    assert ps.sq_norms(before, out.ctypes.data)
    np.testing.assert_array_equal(out, _native.sq_norms(before))
    assert ps.sq_dists(before, out.ctypes.data)
    np.testing.assert_array_equal(out, _native.sq_dists(before, ws))
    assert not ps.sq_norms([before[0]], out.ctypes.data)  # one tensor short


@pytest.mark.parametrize("fast", [True, False])
def test_rows_read_between_reading_and_update_keep_the_step(fast, monkeypatch):
    """Records read inside the optimizer's step (after gradprobe read the gradients, before
    the update is measured): the step's numbers still land in one row per parameter."""
    if not fast:
        monkeypatch.setattr(ParamPass, "read", lambda self, grads, out: False)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    with gradprobe.watch(model, opt, every=1, activations=False) as mon:

        def read_rows(*args: object) -> None:  # an optimizer pre-hook, run after gradprobe's
            mon.to_pandas()

        opt.register_step_pre_hook(read_rows)
        for _ in range(3):
            opt.zero_grad()
            model(torch.randn(16, 5)).pow(2).mean().backward()
            opt.step()
        rows = mon.to_pandas()
    n = sum(1 for p in model.parameters())
    assert sorted(rows["step"].unique()) == [0, 1, 2]
    assert len(rows) == 3 * n
    assert rows["update_norm"].iloc[n:].notna().all()  # momentum buffers exist from step 1
