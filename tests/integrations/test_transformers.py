"""gradprobe.integrations.transformers against the real Hugging Face Trainer (accelerate inside).

Tiny GPT-2 and BERT models built from configs (nothing downloaded), a tiny in-memory dataset.
Every recorded ``grad_norm`` is checked against a reference taken in the same step by a callback
of the test's own: ``on_pre_optimizer_step`` (after accumulation and ``max_grad_norm`` clipping,
just before ``optimizer.step()``) copies every ``p.grad`` in float64, keyed by
``state.global_step``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
import torch  # noqa: E402
import transformers  # noqa: E402

from gradprobe.errors import CaptureError, UsageError  # noqa: E402
from gradprobe.integrations.transformers import GradprobeCallback  # noqa: E402

REL = 1e-10
SEQ = 16


class Tokens(torch.utils.data.Dataset):
    """``n`` random sequences of ``SEQ`` token ids from ``[low, high)``; labels are the ids."""

    def __init__(self, n: int, low: int = 0, high: int = 100, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(low, high, (n, SEQ), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i].clone()}


def gpt2() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=32,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config)


def bert() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=32,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    return transformers.BertForMaskedLM(config)


class GradReference(transformers.TrainerCallback):
    """``{state.global_step: {"<layer>.<param>": ||p.grad|| in float64}}`` before every step."""

    def __init__(self) -> None:
        self.steps: dict[int, dict[str, float]] = {}

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        assert state.global_step not in self.steps
        self.steps[state.global_step] = {
            name: p.grad.double().norm().item()
            for name, p in model.named_parameters()
            if p.grad is not None
        }


def train(model, *callbacks, tmp_path, evaluate=True, **overrides) -> transformers.Trainer:
    kwargs = dict(
        output_dir=str(tmp_path / "out"),
        max_steps=6,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=3,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    kwargs.update(overrides)
    trainer = transformers.Trainer(
        model=model,
        args=transformers.TrainingArguments(**kwargs),
        train_dataset=Tokens(48),
        # other tokens and longer inputs: merged into a training step they would move act_rms
        eval_dataset=Tokens(8, low=90, high=100, seed=1) if evaluate else None,
        callbacks=list(callbacks),
    )
    trainer.train()
    return trainer


def assert_grads_match(params: pd.DataFrame, ref: dict[int, dict[str, float]]) -> None:
    """Every row's grad_norm equals the same step's reference; every reference step recorded."""
    assert sorted(params["step"].unique().tolist()) == sorted(ref), "recorded steps"
    for row in params.itertuples():
        want = ref[row.step][f"{row.layer}.{row.param}"]
        assert abs(row.grad_norm - want) <= REL * want, (row.step, row.layer, row.param)
    for step, norms in ref.items():
        assert (params["step"] == step).sum() == len(norms), f"rows of step {step}"


def total_norms(params: pd.DataFrame) -> pd.Series:
    return params.groupby("step")["grad_norm"].apply(lambda g: math.sqrt((g**2).sum()))


@pytest.mark.parametrize("make", [gpt2, bert], ids=["gpt2", "bert"])
def test_trainer_records_every_step_with_the_gradients_applied(make, tmp_path):
    probe, ref = GradprobeCallback(every=1), GradReference()
    trainer = train(make(), probe, ref, tmp_path=tmp_path)
    assert trainer.state.global_step == 6
    assert sorted(ref.steps) == list(range(6))  # keyed by state.global_step
    params = probe.monitor.to_pandas()
    assert_grads_match(params, ref.steps)
    assert not probe.monitor.attached
    assert len(probe.monitor.to_pandas("layers")) > 0


def test_evaluation_adds_no_record_and_leaves_the_activation_statistics_alone(tmp_path):
    plain, watched = GradprobeCallback(every=1), GradprobeCallback(every=1)
    train(gpt2(), plain, tmp_path=tmp_path / "a", evaluate=False)
    trainer = train(gpt2(), watched, tmp_path=tmp_path / "b", evaluate=True, eval_on_start=True)
    assert [e["step"] for e in trainer.state.log_history if "eval_loss" in e] == [0, 3, 6]
    for table in ("params", "layers"):
        pd.testing.assert_frame_equal(
            plain.monitor.to_pandas(table), watched.monitor.to_pandas(table)
        )
    assert sorted(watched.monitor.to_pandas("layers")["step"].unique()) == list(range(6))


def test_activation_checkpointing_changes_no_number(tmp_path):
    # the checkpointed blocks run their forward again during backward: seen once, not twice
    plain, checkpointed = GradprobeCallback(every=1), GradprobeCallback(every=1)
    train(gpt2(), plain, tmp_path=tmp_path / "a", evaluate=False, max_steps=2)
    trainer = train(gpt2(), checkpointed, tmp_path=tmp_path / "b", evaluate=False, max_steps=2,
                    activation_checkpointing=True)  # fmt: skip
    assert trainer.model.is_activation_checkpointing
    for table in ("params", "layers"):
        pd.testing.assert_frame_equal(
            plain.monitor.to_pandas(table), checkpointed.monitor.to_pandas(table)
        )


def test_gradient_accumulation_gives_one_record_per_optimizer_step(tmp_path):
    probe, ref = GradprobeCallback(every=1), GradReference()
    trainer = train(
        gpt2(), probe, ref, tmp_path=tmp_path, max_steps=3, gradient_accumulation_steps=2
    )
    assert trainer.state.global_step == 3
    assert sorted(ref.steps) == [0, 1, 2]
    assert_grads_match(probe.monitor.to_pandas(), ref.steps)


def test_max_grad_norm_clipping_is_recorded_as_applied(tmp_path):
    probe, ref = GradprobeCallback(every=1), GradReference()
    train(gpt2(), probe, ref, tmp_path=tmp_path, max_grad_norm=1e-3)
    params = probe.monitor.to_pandas()
    assert_grads_match(params, ref.steps)
    np.testing.assert_allclose(total_norms(params), 1e-3, rtol=1e-4)  # unclipped: ~1 and more


def test_training_is_bit_for_bit_the_same_as_unwatched(tmp_path):
    plain, watched = gpt2(), gpt2()
    train(plain, tmp_path=tmp_path / "a", gradient_accumulation_steps=2, max_steps=3)
    probe = GradprobeCallback(every=1)
    train(watched, probe, tmp_path=tmp_path / "b", gradient_accumulation_steps=2, max_steps=3)
    for (name, a), (_, b) in zip(plain.named_parameters(), watched.named_parameters(), strict=True):
        assert torch.equal(a, b), name


def test_bf16_mixed_precision_records_the_gradients_applied(tmp_path):
    probe, ref = GradprobeCallback(every=1), GradReference()
    trainer = train(gpt2(), probe, ref, tmp_path=tmp_path, bf16=True, max_steps=3, evaluate=False)
    assert trainer.accelerator.mixed_precision == "bf16"
    assert sorted(ref.steps) == [0, 1, 2]
    assert_grads_match(probe.monitor.to_pandas(), ref.steps)


def test_every_records_every_nth_step(tmp_path):
    probe, ref = GradprobeCallback(every=4), GradReference()
    train(gpt2(), probe, ref, tmp_path=tmp_path)
    params = probe.monitor.to_pandas()
    assert sorted(params["step"].unique().tolist()) == [0, 4]
    assert_grads_match(params, {s: ref.steps[s] for s in (0, 4)})


def test_the_default_is_the_overhead_budget_and_budget_passes_through(tmp_path):
    probe, ref = GradprobeCallback(), GradReference()
    train(gpt2(), probe, ref, tmp_path=tmp_path / "a")
    assert probe.monitor.cost["budget"] == 0.05
    params = probe.monitor.to_pandas()
    assert 0 in params["step"].tolist()  # step 0 is always recorded in full
    assert_grads_match(params, {s: ref.steps[s] for s in params["step"].unique()})
    tight = GradprobeCallback(budget=0.01)
    train(gpt2(), tight, tmp_path=tmp_path / "b")
    assert tight.monitor.cost["budget"] == 0.01


def test_the_accelerated_optimizer_is_unwrapped(tmp_path):
    probe = GradprobeCallback(every=1)
    trainer = train(gpt2(), probe, tmp_path=tmp_path, max_steps=1, evaluate=False)
    assert type(trainer.optimizer).__name__ == "AcceleratedOptimizer"
    assert probe.monitor.optimizer is trainer.optimizer.optimizer


def test_a_second_train_gets_a_fresh_monitor_and_the_first_one_is_detached(tmp_path):
    probe = GradprobeCallback(every=1)
    model = gpt2()
    train(model, probe, tmp_path=tmp_path / "a", max_steps=1, evaluate=False)
    first = probe.monitor
    train(model, probe, tmp_path=tmp_path / "b", max_steps=2, evaluate=False)
    assert probe.monitor is not first and not first.attached and probe.monitor.steps_seen == 2


def test_log_dir_receives_the_records(tmp_path):
    import gradprobe

    probe = GradprobeCallback(every=1, log_dir=tmp_path / "gp")
    train(gpt2(), probe, tmp_path=tmp_path, max_steps=2, evaluate=False)
    run = gradprobe.load_run(tmp_path / "gp")
    assert sorted(run.to_pandas("params")["step"].unique().tolist()) == [0, 1]


def test_no_model_or_optimizer_is_a_capture_error():
    state = transformers.TrainerState()
    with pytest.raises(CaptureError, match="model and its optimizer"):
        GradprobeCallback().on_train_begin(None, state, None, model=gpt2(), optimizer=None)


def test_bad_every_fails_when_the_callback_is_made():
    with pytest.raises(UsageError, match="every"):
        GradprobeCallback(every=0)
