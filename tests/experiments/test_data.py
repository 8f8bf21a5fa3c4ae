"""The experiments' datasets, read without scikit-learn, equal scikit-learn's bit for bit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gradprobe.experiments import data


def test_classification_points_equal_make_classification_and_its_split() -> None:
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
    ds = data.classification()
    np.testing.assert_array_equal(ds.x_train, x_tr.astype(np.float32))
    np.testing.assert_array_equal(ds.x_test, x_te.astype(np.float32))
    np.testing.assert_array_equal(ds.y_train[:, 0], y_tr.astype(np.float32))
    np.testing.assert_array_equal(ds.y_test[:, 0], y_te.astype(np.float32))


@pytest.mark.parametrize(
    ("n", "test_size", "seed"), [(100, 0.25, 2121), (20640, 0.2, 42), (7, 0.3, 0)]
)
def test_shuffle_split_equals_train_test_split(n: int, test_size: float, seed: int) -> None:
    from sklearn.model_selection import train_test_split

    rows = np.arange(n)
    train, test = train_test_split(rows, test_size=test_size, random_state=seed)
    ours = data.shuffle_split(n, test_size=test_size, random_state=seed)
    np.testing.assert_array_equal(ours[0], train)
    np.testing.assert_array_equal(ours[1], test)


def test_standardise_equals_standard_scaler() -> None:
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = rng.lognormal(size=(500, 4)) * [1, 1e3, 1e-3, 7]
    x[:, 3] = 7.0  # a constant column: sklearn divides by 1
    np.testing.assert_array_equal(data.standardise(x), StandardScaler().fit_transform(x))


@pytest.mark.california
def test_california_from_cache_equals_sklearn_loader_scaler_and_split(
    california_home: Path,
) -> None:
    from sklearn.datasets import fetch_california_housing
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    ref = fetch_california_housing(data_home=str(california_home), download_if_missing=False)
    x = StandardScaler().fit_transform(ref.data).astype(np.float32)
    y = ref.target.reshape(-1, 1).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=42)
    ds = data.california(california_home)
    np.testing.assert_array_equal(ds.x_train, x_tr)
    np.testing.assert_array_equal(ds.x_test, x_te)
    np.testing.assert_array_equal(ds.y_train, y_tr)
    np.testing.assert_array_equal(ds.y_test, y_te)
    assert ds.feature_names == tuple(ref.feature_names)


@pytest.mark.california
def test_loading_the_demo_data_imports_no_sklearn(california_home: Path) -> None:
    """The classification data, and California from scikit-learn's cache, need no scikit-learn
    import: it took 0.7-2 s of every demo."""
    code = (
        "import sys; from gradprobe.experiments import data; data.classification(); "
        f"data.california({str(california_home)!r}); print('sklearn' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"
