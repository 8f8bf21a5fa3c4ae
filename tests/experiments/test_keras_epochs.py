"""--framework keras reads every epoch's batches in the torch backend's order."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("keras", reason="the keras extra is not installed")


def test_keras_epochs_after_the_first_read_the_same_batches_as_torch():
    """fit peeks at two batches and calls on_epoch_end before training, which shifted every
    epoch's shuffled order by one: from epoch 2 on, keras and torch trained on other batches."""
    from gradprobe.experiments import keras_backend, torch_backend
    from gradprobe.experiments.data import classification
    from gradprobe.experiments.spec import EXPERIMENTS

    exp = EXPERIMENTS["classification"]
    train = dataclasses.replace(exp.train, epochs=3)
    data = classification()
    spec = exp.variant("deep-relu")
    k = keras_backend.train(spec, data, train)
    t = torch_backend.train(spec, data, train)
    assert len(k.steps) == len(t.steps) == 9
    np.testing.assert_allclose(
        [r["loss"] for r in k.steps], [r["loss"] for r in t.steps], rtol=1e-3, atol=1e-6
    )
