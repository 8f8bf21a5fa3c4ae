"""The runner: extra seeds, what a network that learned nothing scores, how often it records."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gradprobe.experiments import data as datasets
from gradprobe.experiments.runner import RECORDS_PER_VARIANT, auto_every, run_experiment
from gradprobe.experiments.spec import resolve
from gradprobe.views.story import closing_sentence, final_by_seed, outcomes


@pytest.fixture(scope="module")
def seeded_run(tmp_path_factory):  # type: ignore[no-untyped-def]
    config = resolve("classification", variant="deep-sigmoid,shallow-sigmoid", epochs=3)
    out = tmp_path_factory.mktemp("runs") / "seeded"
    return run_experiment(config, out, seeds=3)


def test_extra_seeds_land_in_epochs_with_a_start_row_for_the_watched_seed(seeded_run):
    run = seeded_run.run
    epochs = run.table("epochs")
    assert sorted(set(epochs["seed"])) == [0, 1, 2] and run.config["seeds"] == [0, 1, 2]
    watched = epochs[(epochs["seed"] == 0) & (epochs["variant"] == "deep-sigmoid")]
    assert list(watched["epoch"]) == [-1, 0, 1, 2]  # -1: before training
    # only the watched seed is recorded
    assert set(run.table("params")["variant"]) == {"deep-sigmoid", "shallow-sigmoid"}
    finals = final_by_seed(run, "shallow-sigmoid")
    assert list(finals["seed"]) == [0, 1, 2] and (finals["epoch"] == 2).all()
    summary = run.summary["variants"][1]
    assert summary["seeds"]["test_accuracy"] == list(finals["test_accuracy"])
    assert summary["test_accuracy"] == finals["test_accuracy"].iloc[0]  # the watched seed's


def test_an_extra_seed_trained_batched_matches_that_seed_trained_alone(seeded_run, tmp_path):
    config = resolve("classification", variant="shallow-sigmoid", epochs=3, seed=2)
    alone = run_experiment(config, tmp_path / "alone", seeds=1).run.table("epochs")
    both = seeded_run.run.table("epochs")
    mine = both[(both["variant"] == "shallow-sigmoid") & (both["seed"] == 2)]
    a = alone[alone["epoch"] >= 0]
    np.testing.assert_allclose(mine["test_loss"], a["test_loss"], rtol=1e-4)


def test_the_closing_sentence_is_made_of_the_runs_numbers(seeded_run):
    run = seeded_run.run
    story = closing_sentence(run)
    assert story == run.summary["story"]
    assert story.startswith("make_classification, 3 epochs of Adam (lr 0.1, batch 32)")
    assert "3 seeds" in story
    for o in outcomes(run):
        assert f"{o.name}'s first layer gets {o.ratio:.2g}" in story
        assert len(o.finals) == 3
        for v in o.finals:
            assert f"{v:.3g}" in story or f"{np.median(o.finals):.3g}" in story


def test_baselines_are_what_a_network_that_learned_nothing_scores(seeded_run):
    data = seeded_run.run.config["data"]
    d = datasets.classification()
    p = d.y_test.mean()
    assert data["chance_test_accuracy"] == pytest.approx(max(p, 1 - p))
    assert data["baseline_test_loss"] > 0.6  # cross-entropy of a constant near 0.5


def test_auto_every_records_every_epochs_first_step_within_the_budget():
    config = resolve("california")

    class Fake:
        x_train = np.zeros((16512, 8), dtype=np.float32)

    every = auto_every(config, Fake())  # type: ignore[arg-type]
    assert 516 % every == 0 and 5 * 516 / every <= RECORDS_PER_VARIANT
    small = dataclasses.replace(config.train, rows=64)
    assert auto_every(dataclasses.replace(config, train=small), Fake()) == 1  # type: ignore[arg-type]


def test_seeds_must_be_positive(tmp_path):
    from gradprobe.errors import UsageError

    with pytest.raises(UsageError, match="--seeds"):
        run_experiment(resolve("classification", epochs=1), tmp_path / "r", seeds=0)
