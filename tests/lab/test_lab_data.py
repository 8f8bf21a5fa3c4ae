"""User tables and scikit-learn datasets: validated before anything trains (exit status 2)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from gradprobe.cli import main
from gradprobe.errors import UsageError
from gradprobe.experiments import data as D


def table(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3))
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": (x[:, 0] > 0).astype(int)})


def test_task_is_inferred_from_the_target():
    f = table()
    assert D.table_dataset(f, "y", None, name="t").task == "binary"
    assert D.table_dataset(f.assign(y=f["a"]), "y", None, name="t").task == "regression"
    multi = D.table_dataset(f.assign(y=np.arange(40) % 3), "y", None, name="t")
    assert multi.task == "multiclass" and D.outputs(multi) == 3
    text = D.table_dataset(f.assign(y=np.where(f["a"] > 0, "yes", "no")), "y", None, name="t")
    assert text.task == "binary" and set(np.unique(text.y_train)) == {0.0, 1.0}


def test_regression_target_and_features_are_standardised_on_training_rows():
    ds = D.table_dataset(table().assign(y=lambda f: 100 + 50 * f["a"]), "y", None, name="t")
    assert abs(ds.y_train.mean()) < 1e-5 and abs(ds.y_train.std() - 1) < 1e-4
    assert np.allclose(ds.x_train.mean(0), 0, atol=1e-5)


@pytest.mark.parametrize(
    "frame, target, message",
    [
        (
            table().assign(b=lambda f: f["b"].where(f.index != 3)),
            "y",
            "missing values in column(s) b (1 rows)",
        ),
        (table().assign(c="x"), "y", "non-numeric column(s) c"),
        (table(), "label", "no column 'label' for --target; columns are a, b, c, y"),
        (table().assign(y=1), "y", "has a single value"),
    ],
)
def test_bad_tables_fail_with_one_clear_message(frame, target, message):
    with pytest.raises(UsageError) as exc:
        D.table_dataset(frame, target, None, name="t.csv")
    assert message in str(exc.value)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda f: f.assign(b=f["b"].where(f.index != 3)), "missing values"),
        (lambda f: f.assign(c="x"), "non-numeric column(s) c"),
        (lambda f: f.rename(columns={"y": "z"}), "no column 'y' for --target"),
    ],
)
def test_cli_bad_data_file_exits_2_with_one_line_before_training(tmp_path, edit, message):
    path = tmp_path / "d.csv"
    edit(table()).to_csv(path, index=False)
    out = tmp_path / "sweep"
    res = CliRunner().invoke(
        main, ["sweep", "--data", str(path), "--target", "y", "--out", str(out)]
    )
    assert res.exit_code == 2
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("gradprobe: error:")
    assert not out.exists()


def test_parquet_file_and_sklearn_generators():
    assert D.sklearn_dataset("make_moons", {"n_samples": 40}).x_train.shape == (30, 2)
    assert (
        D.sklearn_dataset("make_classification", {"n_classes": 3, "n_informative": 3}).task
        == "multiclass"
    )
    with pytest.raises(UsageError, match="unknown parameter 'noize' of dataset make_moons"):
        D.sklearn_dataset("make_moons", {"noize": 0.1})


def test_parquet_round_trip(tmp_path):
    p = tmp_path / "d.parquet"
    table().to_parquet(p)
    assert D.from_table(p, "y").task == "binary"
