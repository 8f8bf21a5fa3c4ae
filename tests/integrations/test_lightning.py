"""gradprobe.integrations.lightning against the real Lightning Trainer.

Every recorded ``grad_norm`` is checked against a reference taken in the same optimizer step: a
step post-hook on the torch optimizer (registered by a callback of the test's own) copies every
``p.grad`` in float64 together with ``trainer.global_step``. The gradients are not changed by
SGD's step, so they are the ones the step applied: clipped, accumulated, unscaled.
"""

from __future__ import annotations

import json
import math
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("lightning")
import lightning.pytorch as L  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402
from torch import nn  # noqa: E402

from gradprobe.errors import CaptureError, UnknownChoiceError, UsageError  # noqa: E402
from gradprobe.integrations.lightning import GradprobeCallback  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning"),
]

REL = 1e-10
STEPS = 6


class Net(L.LightningModule):
    """A small tanh/ReLU regression net trained with SGD (automatic optimisation)."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1)
        )
        self.fail_at = fail_at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        if self.fail_at is not None and batch_idx == self.fail_at:
            raise RuntimeError("boom")
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


class ManualNet(Net):
    """Manual optimisation: zero_grad, manual_backward, clip_gradients and step by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        x, y = batch
        opt.zero_grad()
        loss = nn.functional.mse_loss(self(x), y)
        self.manual_backward(loss)
        self.clip_gradients(opt, gradient_clip_val=0.05, gradient_clip_algorithm="norm")
        opt.step()


class TwoOptimizers(Net):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def configure_optimizers(self):
        return [
            torch.optim.SGD(self.net[0].parameters(), lr=0.1),
            torch.optim.SGD(self.net[2].parameters(), lr=0.1),
        ]


class GradReference(L.Callback):
    """``{trainer.global_step: {"<layer>.<param>": ||p.grad|| in float64}}`` at every step."""

    def __init__(self) -> None:
        self.steps: dict[int, dict[str, float]] = {}

    def on_train_start(self, trainer, pl_module):
        named = list(pl_module.named_parameters())

        def copy(optimizer, args, kwargs):
            assert trainer.global_step not in self.steps
            self.steps[trainer.global_step] = {
                name: p.grad.double().norm().item() for name, p in named if p.grad is not None
            }

        self.handle = trainer.optimizers[0].register_step_post_hook(copy)

    def on_train_end(self, trainer, pl_module):
        self.handle.remove()


class UpdateReference(GradReference):
    """Also ``{trainer.global_step: {"<layer>.<param>": ||W_after - W_before||}}`` in float64."""

    def on_train_start(self, trainer, pl_module):
        super().on_train_start(trainer, pl_module)
        named = list(pl_module.named_parameters())
        self.updates: dict[int, dict[str, float]] = {}
        before: dict[str, torch.Tensor] = {}

        def keep(optimizer, args, kwargs):
            before.update({name: p.detach().double() for name, p in named})

        def change(optimizer, args, kwargs):
            self.updates[trainer.global_step] = {
                name: (p.detach().double() - before[name]).norm().item() for name, p in named
            }

        opt = trainer.optimizers[0]
        self.handles = [opt.register_step_pre_hook(keep), opt.register_step_post_hook(change)]

    def on_train_end(self, trainer, pl_module):
        super().on_train_end(trainer, pl_module)
        for h in self.handles:
            h.remove()


class DumpedReference(GradReference):
    """A :class:`GradReference` that writes its steps to ``folder/ref-<rank>.json`` (for runs in
    processes of their own)."""

    def __init__(self, folder) -> None:
        super().__init__()
        self.folder = folder

    def on_train_end(self, trainer, pl_module):
        super().on_train_end(trainer, pl_module)
        path = self.folder / f"ref-{trainer.global_rank}.json"
        path.write_text(json.dumps({str(k): v for k, v in self.steps.items()}))


def loader(n: int = 48, scale: float = 1.0, seed: int = 0) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g) * scale
    y = torch.randn(n, 1, generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)


def fit(
    model: L.LightningModule, *callbacks: L.Callback, val=None, ckpt_path=None, **trainer_kwargs
) -> L.Trainer:
    kwargs = dict(
        max_steps=STEPS,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
        num_sanity_val_steps=0 if val is None else 2,
        limit_val_batches=None if val is not None else 0,
    )
    kwargs.update(trainer_kwargs)
    trainer = L.Trainer(callbacks=list(callbacks), **kwargs)
    trainer.fit(model, loader(), val, ckpt_path=ckpt_path)
    return trainer


def assert_grads_match(params: pd.DataFrame, ref: dict[int, dict[str, float]]) -> None:
    """Every row's grad_norm equals the same step's reference; every reference step recorded."""
    assert sorted(params["step"].unique().tolist()) == sorted(ref), "recorded steps"
    for row in params.itertuples():
        want = ref[row.step][f"{row.layer}.{row.param}"]
        assert abs(row.grad_norm - want) <= REL * want, (row.step, row.layer, row.param)
    for step, norms in ref.items():
        assert (params["step"] == step).sum() == len(norms), f"rows of step {step}"


def model(cls=Net) -> L.LightningModule:
    torch.manual_seed(0)
    return cls()


# --------------------------------------------------------------------------- optimisation


def test_automatic_optimisation_records_every_step_with_the_gradients_applied():
    probe, ref = GradprobeCallback(every=1), GradReference()
    trainer = fit(model(), probe, ref)
    assert trainer.global_step == STEPS
    assert sorted(ref.steps) == list(range(STEPS))  # keyed by trainer.global_step
    assert_grads_match(probe.monitor.to_pandas(), ref.steps)
    assert probe.monitor.steps_seen == STEPS
    assert not probe.monitor.attached


def test_manual_optimisation_records_every_step_with_the_clipped_gradients():
    probe, ref = GradprobeCallback(every=1), GradReference()
    fit(model(ManualNet), probe, ref)
    params = probe.monitor.to_pandas()
    assert_grads_match(params, ref.steps)
    total = params.groupby("step")["grad_norm"].apply(lambda g: math.sqrt((g**2).sum()))
    assert (total <= 0.05 * (1 + 1e-5)).all(), total  # clip_gradients(0.05) as applied


def test_gradient_clipping_records_the_clipped_gradients():
    probe, ref = GradprobeCallback(every=1), GradReference()
    fit(model(), probe, ref, gradient_clip_val=0.01)
    params = probe.monitor.to_pandas()
    assert_grads_match(params, ref.steps)
    total = params.groupby("step")["grad_norm"].apply(lambda g: math.sqrt((g**2).sum()))
    np.testing.assert_allclose(total, 0.01, rtol=1e-4)  # the unclipped norms are ~0.3..3


def test_gradient_clipping_by_value_records_the_clipped_gradients():
    probe, ref = GradprobeCallback(every=1), GradReference()
    fit(model(), probe, ref, gradient_clip_val=1e-3, gradient_clip_algorithm="value")
    params = probe.monitor.to_pandas()
    assert_grads_match(params, ref.steps)
    assert (params["grad_max_abs"] <= np.float32(1e-3)).all()


def test_accumulate_grad_batches_gives_one_record_per_optimizer_step():
    probe, ref = GradprobeCallback(every=1), GradReference()
    trainer = fit(model(), probe, ref, accumulate_grad_batches=3, max_steps=4, max_epochs=-1)
    assert trainer.global_step == 4
    assert sorted(ref.steps) == [0, 1, 2, 3]
    assert_grads_match(probe.monitor.to_pandas(), ref.steps)


def test_every_records_every_nth_optimizer_step():
    probe, ref = GradprobeCallback(every=2), GradReference()
    fit(model(), probe, ref)
    params = probe.monitor.to_pandas()
    assert sorted(params["step"].unique().tolist()) == [0, 2, 4]
    assert_grads_match(params, {s: ref.steps[s] for s in (0, 2, 4)})


def test_bf16_mixed_precision_records_the_gradients_applied():
    probe, ref = GradprobeCallback(every=1), GradReference()
    fit(model(), probe, ref, precision="bf16-mixed")
    assert_grads_match(probe.monitor.to_pandas(), ref.steps)


def test_bf16_weights_record_the_real_change_of_the_weights():
    # SGD on bf16 weights: rounding leaves many weights unchanged, lr * ||g|| would overstate it
    probe, ref = GradprobeCallback(every=1), UpdateReference()
    fit(model(), probe, ref, precision="bf16-true")
    params = probe.monitor.to_pandas()
    assert_grads_match(params, ref.steps)
    for row in params.itertuples():
        want = ref.updates[row.step][f"{row.layer}.{row.param}"]
        assert abs(row.update_norm - want) <= 1e-6 * want, (row.step, row.layer, row.param)


def fp16(init_scale: float = 2.0**16):
    """``"16-mixed"`` on the CPU (Lightning's default falls back to bf16 there): fp16 autocast
    and a GradScaler, as on a GPU."""
    from lightning.pytorch.plugins import MixedPrecision

    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    return MixedPrecision("16-mixed", "cpu", scaler=scaler)


def test_fp16_with_a_grad_scaler_records_unscaled_gradients_and_backward_signal():
    plain, scaled, ref = GradprobeCallback(every=1), GradprobeCallback(every=1), GradReference()
    fit(model(), plain, max_steps=1)
    fit(model(), scaled, ref, plugins=[fp16()])
    assert_grads_match(scaled.monitor.to_pandas(), ref.steps)
    # step 0, same weights and batch: fp16 autocast moves the numbers by ~1e-3, the scale by 65536
    want = plain.monitor.to_pandas("layers").set_index("layer")["backward_norm"]
    got = scaled.monitor.to_pandas("layers").query("step == 0").set_index("layer")["backward_norm"]
    np.testing.assert_allclose(got, want.loc[got.index], rtol=1e-2)


def test_fp16_steps_the_grad_scaler_skips_are_flagged_rows():
    probe, ref = GradprobeCallback(every=1), GradReference()
    trainer = fit(model(), probe, ref, plugins=[fp16(init_scale=2.0**19)])  # 3 steps overflow
    params = probe.monitor.to_pandas()
    assert ref.steps, "some steps must be applied"
    assert sorted(params["step"].unique()) == list(range(trainer.global_step))
    skipped = sorted(params.loc[params["skipped"], "step"].unique())
    assert skipped and skipped == sorted(set(range(trainer.global_step)) - set(ref.steps))
    assert_grads_match(params[~params["skipped"]], ref.steps)
    assert (params.loc[params["skipped"], "grad_nonfinite"].fillna(0) == 0).all()


@pytest.mark.slow
def test_ddp_on_two_processes_records_the_global_gradients_on_each_rank(tmp_path):
    from lightning.pytorch.strategies import DDPStrategy

    import gradprobe

    # gloo on 127.0.0.1; a collective that waits longer than a minute fails instead of hanging
    ddp = DDPStrategy(start_method="spawn", process_group_backend="gloo", timeout=timedelta(60))
    probe = GradprobeCallback(every=1, log_dir=tmp_path / "gp", all_ranks=True)
    fit(model(), probe, DumpedReference(tmp_path), strategy=ddp, devices=2, max_steps=4)
    assert probe.monitor is None  # it lived in the spawned processes: the records are on disk
    params = gradprobe.load_run(tmp_path / "gp").to_pandas("params")
    assert sorted(params["rank"].unique()) == [0, 1]
    refs = []
    for rank in (0, 1):
        ref = json.loads((tmp_path / f"ref-{rank}.json").read_text())
        refs.append({int(k): v for k, v in ref.items()})
        assert sorted(refs[-1]) == [0, 1, 2, 3]
        assert_grads_match(params[params["rank"] == rank], refs[-1])
    assert refs[0] == refs[1]  # DDP averaged the gradients: both ranks apply the same


# ------------------------------------------------------------------------------ validation


def _tables(probe: GradprobeCallback) -> tuple[pd.DataFrame, pd.DataFrame]:
    assert probe.monitor is not None
    return probe.monitor.to_pandas("params"), probe.monitor.to_pandas("layers")


def test_validation_adds_no_record_and_leaves_the_activation_statistics_alone():
    # inputs 100x larger in validation: merged into a training step they would move act_rms
    plain, watched = GradprobeCallback(every=1), GradprobeCallback(every=1)
    fit(model(), plain)
    trainer = fit(model(), watched, val=loader(16, scale=100.0, seed=1), val_check_interval=2)
    assert "val_loss" in trainer.callback_metrics  # validation did run
    p0, l0 = _tables(plain)
    p1, l1 = _tables(watched)
    assert sorted(l1["step"].unique().tolist()) == list(range(STEPS))
    pd.testing.assert_frame_equal(p0, p1)
    pd.testing.assert_frame_equal(l0, l1)


def test_training_is_bit_for_bit_the_same_as_unwatched():
    plain, watched = model(), model()
    fit(plain, gradient_clip_val=0.5, accumulate_grad_batches=2)
    fit(watched, GradprobeCallback(every=1), gradient_clip_val=0.5, accumulate_grad_batches=2)
    for (name, a), (_, b) in zip(plain.named_parameters(), watched.named_parameters(), strict=True):
        assert torch.equal(a, b), name


# -------------------------------------------------------------------------------- logging


def _logged(tmp_path) -> pd.DataFrame:
    frame = pd.read_csv(next(tmp_path.rglob("metrics.csv")))
    return frame.groupby("step").first()


def test_numbers_go_to_the_trainers_logger_at_their_steps(tmp_path):
    probe = GradprobeCallback(every=1)
    logger = CSVLogger(tmp_path, name="run")
    fit(model(), probe, logger=logger, log_every_n_steps=4)
    params, layers = _tables(probe)
    logged = _logged(tmp_path)
    for row in params.itertuples():
        column = f"gradprobe/grad_norm/{row.layer}.{row.param}"
        assert logged.loc[row.step, column] == row.grad_norm
        if not math.isnan(row.update_ratio):
            assert logged.loc[row.step, f"gradprobe/update_ratio/{row.layer}.{row.param}"] == (
                row.update_ratio
            )
    assert sorted(params["step"].unique()) == list(range(STEPS))
    for row in layers.dropna(subset=["backward_norm"]).itertuples():
        assert logged.loc[row.step, f"gradprobe/backward_norm/{row.layer}"] == row.backward_norm
    assert "train_loss" in logged.columns  # the module's own logging is untouched


def test_a_resumed_fit_logs_at_the_trainers_global_steps(tmp_path):
    net = model()
    trainer = fit(net, max_steps=3)
    trainer.save_checkpoint(tmp_path / "three.ckpt")
    probe = GradprobeCallback(every=1)
    logger = CSVLogger(tmp_path, name="run")
    fit(model(), probe, logger=logger, log_every_n_steps=1, ckpt_path=tmp_path / "three.ckpt")
    assert probe.first_step == 3
    logged = _logged(tmp_path)
    ours = [c for c in logged.columns if c.startswith("gradprobe/grad_norm/")]
    assert sorted(logged.dropna(subset=ours, how="all").index.tolist()) == [3, 4, 5]
    # the records count this fit's steps from 0: record step k is global step first_step + k
    assert sorted(probe.monitor.to_pandas()["step"].unique()) == [0, 1, 2]


def test_logged_statistics_can_be_chosen(tmp_path):
    probe = GradprobeCallback(every=3, logged=["act_rms"])
    fit(model(), probe, logger=CSVLogger(tmp_path, name="run"))
    logged = _logged(tmp_path)
    ours = [c for c in logged.columns if c.startswith("gradprobe/")]
    assert ours and all(c.startswith("gradprobe/act_rms/") for c in ours)
    assert sorted(logged.dropna(subset=ours, how="all").index.tolist()) == [0, 3]


def test_nothing_is_logged_when_asked_not_to(tmp_path):
    probe = GradprobeCallback(every=1, log_to_logger=False)
    fit(model(), probe, logger=CSVLogger(tmp_path, name="run"), log_every_n_steps=1)
    assert not [c for c in _logged(tmp_path).columns if c.startswith("gradprobe/")]
    assert len(probe.monitor.to_pandas()) > 0


# ------------------------------------------------------------------------------ lifecycle


def test_the_monitor_detaches_when_training_fails_and_keeps_its_records():
    probe, ref = GradprobeCallback(every=1), GradReference()
    with pytest.raises(RuntimeError, match="boom"):
        fit(Net(fail_at=3), probe, ref)
    assert probe.monitor is not None and not probe.monitor.attached
    assert_grads_match(probe.monitor.to_pandas(), ref.steps)
    assert sorted(ref.steps) == [0, 1, 2]


def test_a_second_fit_gets_a_fresh_monitor_and_the_first_one_is_detached():
    probe = GradprobeCallback(every=1)
    net = model()
    fit(net, probe, max_steps=2)
    first = probe.monitor
    fit(net, probe, max_steps=3)
    assert probe.monitor is not first and not first.attached
    assert len(first.to_pandas()) > 0


def test_log_dir_receives_the_records(tmp_path):
    import gradprobe

    probe = GradprobeCallback(every=1, log_dir=tmp_path / "gp")
    fit(model(), probe)
    assert list((tmp_path / "gp").iterdir())
    run = gradprobe.load_run(tmp_path / "gp")
    assert sorted(run.to_pandas("params")["step"].unique().tolist()) == list(range(STEPS))


def test_the_default_is_the_overhead_budget_and_budget_passes_through():
    probe, ref = GradprobeCallback(), GradReference()
    fit(model(), probe, ref)
    assert probe.monitor.cost["budget"] == 0.05
    params = probe.monitor.to_pandas()
    assert 0 in params["step"].tolist()  # step 0 is always recorded in full
    assert_grads_match(params, {s: ref.steps[s] for s in params["step"].unique()})
    tight = GradprobeCallback(budget=0.01)
    fit(model(), tight)
    assert tight.monitor.cost["budget"] == 0.01


def test_more_than_one_optimizer_is_a_capture_error():
    with pytest.raises(CaptureError, match="one optimizer, got 2"):
        fit(model(TwoOptimizers), GradprobeCallback(every=1))


def test_bad_options_fail_when_the_callback_is_made():
    with pytest.raises(UsageError, match="every"):
        GradprobeCallback(every=0)
    with pytest.raises(UnknownChoiceError, match="grad_nrom"):
        GradprobeCallback(logged=["grad_nrom"])
    with pytest.raises(UsageError, match="every"):
        GradprobeCallback(log_every_n_steps=0)
