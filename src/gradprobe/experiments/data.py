"""The datasets of the experiments (numpy only; no framework).

California Housing comes from scikit-learn's own loader (``fetch_california_housing``), which
downloads it once into scikit-learn's data home. Offline, point ``--data-home`` or
``SCIKIT_LEARN_DATA`` at a folder that already holds its cache.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gradprobe.errors import DataError


@dataclass(frozen=True)
class Dataset:
    """A train/test split as float32 arrays; ``y`` has shape (n, 1)."""

    name: str
    task: str  # "regression" or "binary"
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    feature_names: tuple[str, ...] = ()

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])


CALIFORNIA_FEATURES = (
    "MedInc",
    "HouseAge",
    "AveRooms",
    "AveBedrms",
    "Population",
    "AveOccup",
    "Latitude",
    "Longitude",
)


def california(data_home: str | Path | None = None, *, download: bool = True) -> Dataset:
    """California Housing as the seed notebook prepares it.

    StandardScaler fitted on all of X (as the notebook does), then an 80/20 split with
    ``random_state=42``. Target: median house value in units of $100,000.

    scikit-learn's cache (``cal_housing_py3.pkz`` in its data home) is read directly, as
    ``fetch_california_housing`` reads it; scikit-learn is imported only to download it.
    The numbers equal scikit-learn's loader, scaler and split bit for bit (a test checks).
    """
    home = str(data_home) if data_home is not None else None
    cache = _california_cache(home)
    if cache.is_file():
        import joblib

        raw = np.array(joblib.load(cache), dtype=np.float64)
        target, x = raw[:, 0], raw[:, 1:]
        x[:, 2] /= x[:, 5]  # rooms, bedrooms per household; occupancy = population/households
        x[:, 3] /= x[:, 5]
        x[:, 5] = x[:, 4] / x[:, 5]
        y = target / 100000.0
    else:
        x, y = _fetch_california(home, download)
    x = standardise(x).astype(np.float32)
    train, test = shuffle_split(len(x), test_size=0.2, random_state=42)
    y = y.reshape(-1, 1).astype(np.float32)
    return Dataset(
        "california", "regression", x[train], y[train], x[test], y[test], CALIFORNIA_FEATURES
    )


def _california_cache(home: str | None) -> Path:
    """Where scikit-learn keeps California Housing (its ``get_data_home`` rule)."""
    root = home or os.environ.get("SCIKIT_LEARN_DATA") or str(Path("~") / "scikit_learn_data")
    return Path(root).expanduser() / "cal_housing_py3.pkz"


def _fetch_california(home: str | None, download: bool) -> tuple[np.ndarray, np.ndarray]:
    """X and y from scikit-learn's loader, which downloads the data into its cache."""
    from sklearn.datasets import fetch_california_housing

    try:
        with warnings.catch_warnings():  # sklearn warns on each download retry
            warnings.simplefilter("ignore")
            ds = fetch_california_housing(data_home=home, download_if_missing=download)
    except OSError as exc:  # offline, or no cache: sklearn raises OSError / URLError
        where = home or os.environ.get("SCIKIT_LEARN_DATA") or "~/scikit_learn_data"
        raise DataError(
            f"California Housing is not in scikit-learn's cache at {where} and could not be "
            f"downloaded ({type(exc).__name__}); run once with internet access, or pass "
            "--data-home DIR (or set SCIKIT_LEARN_DATA) to a folder holding cal_housing_py3.pkz"
        ) from None
    return np.asarray(ds.data, dtype=np.float64), np.asarray(ds.target, dtype=np.float64)


def standardise(x: np.ndarray) -> np.ndarray:
    """``StandardScaler().fit_transform(x)`` of scikit-learn, same arithmetic: the mean, the
    variance by the corrected two-pass sum, a zero spread taken as 1."""
    x = np.array(x, dtype=np.float64)
    n = len(x)
    total = np.sum(x, axis=0)
    mean = total / n
    dev = x - total / n
    correction = np.sum(dev, axis=0)
    var = (np.sum(dev**2, axis=0) - correction**2 / n) / n
    scale = np.sqrt(var)
    scale[scale < 10 * np.finfo(np.float64).eps] = 1.0
    x -= mean
    x /= scale
    return x


def shuffle_split(
    n: int, *, test_size: float = 0.25, random_state: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test row indices of scikit-learn's ``train_test_split(..., test_size,
    random_state)`` (no stratification): one ``RandomState`` permutation, the test rows first."""
    n_test = math.ceil(test_size * n)
    n_train = math.floor((1 - test_size) * n)
    order = np.random.RandomState(random_state).permutation(n)
    return order[n_test : n_test + n_train], order[:n_test]


def classification() -> Dataset:
    """The make_classification notebook's 100 points in 2 dimensions, split 75/25 as
    ``train_test_split(random_state=2121)`` splits them (the points: :mod:`._points`)."""
    from gradprobe.experiments._points import X, Y

    x = np.array(X, dtype=np.float32)
    y = np.array([int(c) for c in Y], dtype=np.float32).reshape(-1, 1)
    train, test = shuffle_split(len(x), random_state=2121)
    return Dataset("classification", "binary", x[train], y[train], x[test], y[test], ("x0", "x1"))


TASKS = ("regression", "binary", "multiclass")
MAX_CLASSES = 50  # an integer target with more distinct values than this is a regression target


def outputs(data: Dataset) -> int:
    """Output units a model needs for ``data``: the classes of a multiclass task, else 1."""
    if data.task != "multiclass":
        return 1
    return int(max(data.y_train.max(), data.y_test.max())) + 1


def loss_for(task: str) -> str:
    """The loss of a task: mse (regression), bce (binary) or ce (multiclass)."""
    return {"regression": "mse", "binary": "bce", "multiclass": "ce"}[task]


def prepare(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    task: str,
    feature_names: tuple[str, ...] = (),
    *,
    test_size: float = 0.25,
    split_seed: int = 0,
) -> Dataset:
    """Split 75/25 (stratified for classification), standardise X with the training rows' mean
    and std; a regression target is standardised too, so a loss of 1 means predicting its mean.
    Class targets become 0..k-1."""
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(y).reshape(-1)
    strat = y if task != "regression" else None
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_size, random_state=split_seed, stratify=strat
    )
    scaler = StandardScaler().fit(x_tr)
    x_tr, x_te = scaler.transform(x_tr), scaler.transform(x_te)
    if task == "regression":
        mu, sd = float(np.mean(y_tr)), float(np.std(y_tr)) or 1.0
        y_tr, y_te = (y_tr - mu) / sd, (y_te - mu) / sd
    f32 = np.float32
    return Dataset(
        name,
        task,
        x_tr.astype(f32),
        y_tr.reshape(-1, 1).astype(f32),
        x_te.astype(f32),
        y_te.reshape(-1, 1).astype(f32),
        tuple(feature_names),
    )


_SKLEARN_TASKS = {
    "breast_cancer": "binary",
    "digits": "multiclass",
    "diabetes": "regression",
    "wine": "multiclass",
    "make_classification": "classes",
    "make_regression": "regression",
    "make_moons": "binary",
}
SKLEARN_DATASETS = tuple(_SKLEARN_TASKS)


def sklearn_dataset(name: str, params: dict[str, object] | None = None) -> Dataset:
    """A scikit-learn dataset that needs no download: a bundled one (breast_cancer, digits,
    diabetes, wine; no parameters) or a generator (make_classification, make_regression,
    make_moons) called with ``params`` (``random_state`` defaults to 0)."""
    import inspect

    import sklearn.datasets as skd

    from gradprobe.errors import UnknownChoiceError, UsageError

    if name not in _SKLEARN_TASKS:
        raise UnknownChoiceError("dataset", name, SKLEARN_DATASETS)
    params = dict(params or {})
    fn = getattr(skd, name if name.startswith("make_") else f"load_{name}")
    valid = [p for p in inspect.signature(fn).parameters if p not in ("return_X_y", "as_frame")]
    if not name.startswith("make_"):
        valid = []
    bad = [k for k in params if k not in valid]
    if bad:
        allowed = ", ".join(valid) if valid else "none (a bundled dataset takes no parameters)"
        raise UsageError(f"unknown parameter {bad[0]!r} of dataset {name}: expected {allowed}")
    if name.startswith("make_"):
        params.setdefault("random_state", 0)
        if name == "make_regression" and params.get("n_targets", 1) != 1:
            raise UsageError("make_regression: n_targets must be 1 (one output unit)")
        try:
            x, y = fn(**params)[:2]
        except (TypeError, ValueError) as exc:
            raise UsageError(f"dataset {name} with {params}: {exc}") from None
        names: tuple[str, ...] = tuple(f"x{i}" for i in range(x.shape[1]))
    else:
        ds = fn()
        x, y, names = ds.data, ds.target, tuple(ds.feature_names)
    task = _SKLEARN_TASKS[name]
    if task == "classes":
        task = "binary" if len(np.unique(y)) == 2 else "multiclass"
    return prepare(name, np.asarray(x, dtype=float), y, task, names)


def from_table(path: str | Path, target: str, task: str | None = None) -> Dataset:
    """A user's CSV or Parquet file: numeric feature columns and a ``target`` column.

    The task is ``task`` or inferred: a target with two distinct values is binary; a text
    target, or a whole-number one with at most MAX_CLASSES values, is multiclass; anything
    else is a regression. Bad input raises :class:`~gradprobe.errors.UsageError` naming the file
    and the column, before anything trains.
    """
    frame = read_table(path)
    return table_dataset(frame, target, task, name=Path(path).name)


def read_table(path: str | Path) -> Any:
    """A CSV or Parquet file as a DataFrame (UsageError when missing or unreadable)."""
    import pandas as pd

    from gradprobe.errors import UsageError

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--data {p}: no such file (expected a .csv or .parquet file)")
    suffix = p.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise UsageError(f"--data {p}: unknown file type {suffix!r}: expected .csv or .parquet")
    try:
        return pd.read_csv(p) if suffix == ".csv" else pd.read_parquet(p)
    except Exception as exc:  # pandas/pyarrow raise many types for a bad file
        raise UsageError(f"--data {p}: cannot be read ({type(exc).__name__}: {exc})") from None


def table_dataset(frame: Any, target: str, task: str | None, *, name: str) -> Dataset:
    """Validate a DataFrame (see :func:`from_table`) and turn it into a split Dataset."""
    from gradprobe.errors import UnknownChoiceError, UsageError

    if task is not None and task not in TASKS:
        raise UnknownChoiceError("task", task, TASKS)
    if target not in frame.columns:
        raise UsageError(
            f"--data {name}: no column {target!r} for --target; columns are "
            f"{', '.join(map(str, frame.columns))}"
        )
    if len(frame) < 8:
        raise UsageError(f"--data {name}: {len(frame)} rows; at least 8 are needed to split")
    missing = [str(c) for c in frame.columns if frame[c].isna().any()]
    if missing:
        n = int(frame[missing].isna().any(axis=1).sum())
        raise UsageError(
            f"--data {name}: missing values in column(s) {', '.join(missing)} ({n} rows); "
            "fill or drop them first"
        )
    feats = frame.drop(columns=[target])
    text = [str(c) for c in feats.columns if not _numeric(feats[c])]
    if text:
        raise UsageError(
            f"--data {name}: non-numeric column(s) {', '.join(text)}; encode them as numbers "
            "or drop them"
        )
    if feats.shape[1] == 0:
        raise UsageError(f"--data {name}: no feature column besides the target {target!r}")
    y, task = _target(frame[target], task, f"--data {name}: target {target!r}")
    x = feats.to_numpy(dtype=float)
    return prepare(name, x, y, task, tuple(map(str, feats.columns)))


def _numeric(col: Any) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(col))  # bool columns count as numeric


def _target(col: Any, task: str | None, where: str) -> tuple[np.ndarray, str]:
    """The target as numbers (classes as 0..k-1) and its task, inferred when None."""
    from gradprobe.errors import UsageError

    values = col.to_numpy()
    classes = np.unique(values.astype(str) if not _numeric(col) else values)
    numeric = _numeric(col)
    whole = numeric and np.all(np.mod(values.astype(float), 1) == 0)
    if task is None:
        if len(classes) == 2:
            task = "binary"
        elif not numeric or (whole and len(classes) <= MAX_CLASSES):
            task = "multiclass"
        else:
            task = "regression"
    if len(classes) < 2:
        raise UsageError(f"{where} has a single value ({classes[0]!r}); nothing to learn")
    if task == "regression":
        if not numeric:
            raise UsageError(f"{where} is not numeric; a regression target must be")
        return values.astype(float), task
    if task == "binary" and len(classes) != 2:
        raise UsageError(f"{where} has {len(classes)} distinct values; --task binary needs 2")
    if numeric and not whole:
        raise UsageError(f"{where} has fractional values; a class label must be a whole number")
    keyed = values.astype(str) if not numeric else values
    return np.searchsorted(classes, keyed).astype(float), task
