"""The datasets of the experiments (numpy only; no framework).

California Housing comes from scikit-learn's own loader (``fetch_california_housing``), which
downloads it once into scikit-learn's data home. Offline, point ``--data-home`` or
``SCIKIT_LEARN_DATA`` at a folder that already holds its cache.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

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


def california(data_home: str | Path | None = None, *, download: bool = True) -> Dataset:
    """California Housing as the seed notebook prepares it.

    StandardScaler fitted on all of X (as the notebook does), then an 80/20 split with
    ``random_state=42``. Target: median house value in units of $100,000.
    """
    from sklearn.datasets import fetch_california_housing
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    home = str(data_home) if data_home is not None else None
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
    x = StandardScaler().fit_transform(ds.data).astype(np.float32)
    y = ds.target.reshape(-1, 1).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=42)
    return Dataset("california", "regression", x_tr, y_tr, x_te, y_te, tuple(ds.feature_names))


def classification() -> Dataset:
    """The make_classification notebook's 100 points in 2 dimensions, split 75/25."""
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split

    x, y = make_classification(
        n_samples=100,
        n_features=2,
        n_classes=2,
        n_redundant=0,
        n_repeated=0,
        n_clusters_per_class=1,
        random_state=2121,
    )
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, random_state=2121)
    f32 = np.float32
    return Dataset(
        "classification",
        "binary",
        x_tr.astype(f32),
        y_tr.reshape(-1, 1).astype(f32),
        x_te.astype(f32),
        y_te.reshape(-1, 1).astype(f32),
        ("x0", "x1"),
    )
