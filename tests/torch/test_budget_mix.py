"""Analysis on a run whose steps carry different statistics (the default overhead budget): most
steps have gradient rows only, a share of them layer rows too, some nothing. Diagnosis, the
notebook views, the plots and the report must handle the mix, and find what the same model
watched on every step finds."""

from __future__ import annotations

import matplotlib
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradprobe
from gradprobe.budget import Tier

matplotlib.use("Agg")

A, G, N = Tier.ALL, Tier.GRADIENTS, Tier.NONE


class Scripted:
    def __init__(self, tiers: list[Tier]) -> None:
        self.tiers = tiers

    def tier(self, step: int) -> Tier:
        return self.tiers[step % len(self.tiers)]

    def done(self, step: int) -> None:
        pass


def deep_sigmoid() -> nn.Sequential:
    """Vanishing gradients: 8 sigmoid layers with small weights."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(8):
        lin = nn.Linear(8 if i == 0 else 32, 32)
        nn.init.normal_(lin.weight, std=0.1)
        layers += [lin, nn.Sigmoid()]
    layers.append(nn.Linear(32, 1))
    return nn.Sequential(*layers)


def watched(log_dir, **kw):  # type: ignore[no-untyped-def]
    model = deep_sigmoid()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradprobe.watch(model, opt, log_dir=log_dir, **kw)
    g = torch.Generator().manual_seed(1)
    for _ in range(40):
        opt.zero_grad()
        x, y = torch.randn(64, 8, generator=g), torch.randn(64, 1, generator=g)
        F.mse_loss(model(x), y).backward()
        opt.step()
    mon.detach()
    return mon


@pytest.fixture(scope="module")
def runs(tmp_path_factory):  # type: ignore[no-untyped-def]
    mixed_dir = tmp_path_factory.mktemp("mixed")
    full_dir = tmp_path_factory.mktemp("full")
    mixed = watched(mixed_dir, budget=Scripted([A, G, G, N, G, N, N, G]))
    full = watched(full_dir, every=1)
    return mixed, mixed_dir, full, full_dir


def test_the_mixed_run_has_gradient_only_steps(runs) -> None:  # type: ignore[no-untyped-def]
    mixed, *_ = runs
    params, layers = mixed.to_pandas(), mixed.to_pandas("layers")
    assert set(params["tier"]) == {"all", "gradients"}
    assert params["step"].nunique() == 25 and layers["step"].nunique() == 5


def test_diagnose_finds_on_a_mixed_run_what_it_finds_on_every_step(runs) -> None:  # type: ignore[no-untyped-def]
    mixed, mixed_dir, full, _ = runs
    got = gradprobe.diagnose((mixed.to_pandas(), mixed.to_pandas("layers")))
    want = gradprobe.diagnose((full.to_pandas(), full.to_pandas("layers")))
    assert want  # the model is unhealthy: something to find
    assert {f.code for f in want} == {f.code for f in got}
    assert gradprobe.diagnose(gradprobe.load_run(mixed_dir)) is not None


def test_notebook_views_and_plots_of_a_mixed_run(runs) -> None:  # type: ignore[no-untyped-def]
    import matplotlib.pyplot as plt

    mixed, *_ = runs
    assert "<" in mixed._repr_html_()
    figs = mixed.plot()
    assert figs
    plt.close("all")


def test_report_of_a_mixed_run(runs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, mixed_dir, *_ = runs
    out = gradprobe.write_report(mixed_dir, tmp_path / "report.html")
    assert out.read_text(encoding="utf-8").count("<") > 10
