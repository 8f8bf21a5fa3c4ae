"""gradprobe._fusednp: slices of one flat buffer through the fused C pass, against numpy."""

from __future__ import annotations

import numpy as np
import pytest

from gradprobe import _fusednp as F


def _buffer(dtype):
    rng = np.random.default_rng(0)
    sizes = np.array([1, 7, 64, 1000, 0, 33], dtype=np.int64)
    buf = (rng.normal(size=int(sizes.sum()) + 10) * 1e3).astype(dtype)
    buf[3:6] = 0.0
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]) + 5
    return buf, offsets, sizes


def _slices(buf, offsets, sizes):
    return [buf[o : o + n].astype(np.float64) for o, n in zip(offsets, sizes, strict=True)]


@pytest.mark.parametrize("enabled", [True, False], ids=["c", "numpy"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_reductions_of_slices_match_float64_numpy(monkeypatch, enabled, dtype):
    if enabled and not F.ENABLED:
        pytest.skip("gradprobe._fused is not built")
    monkeypatch.setattr(F, "ENABLED", enabled)
    buf, offsets, sizes = _buffer(dtype)
    xs = _slices(buf, offsets, sizes)
    want = np.array([[x.sum(), x @ x, np.abs(x).max(initial=0), np.sum(x == 0)] for x in xs])
    np.testing.assert_allclose(F.moments(buf, offsets, sizes), want, rtol=1e-12)
    np.testing.assert_allclose(F.sq_norms(buf, offsets, sizes), want[:, 1], rtol=1e-12)
    shifted = offsets + 1
    d = [x - y for x, y in zip(xs, _slices(buf, shifted, sizes), strict=True)]
    np.testing.assert_allclose(
        F.sq_dists(buf, offsets, shifted, sizes), [v @ v for v in d], rtol=1e-12
    )


@pytest.mark.parametrize("enabled", [True, False], ids=["c", "numpy"])
def test_outputs_count_the_band_and_the_units_that_fired(monkeypatch, enabled):
    if enabled and not F.ENABLED:
        pytest.skip("gradprobe._fused is not built")
    monkeypatch.setattr(F, "ENABLED", enabled)
    rng = np.random.default_rng(1)
    a = np.maximum(rng.normal(size=(2, 12, 8)) - 1.0, 0).astype(np.float32)
    a[1, :, 3] = 0.0  # a unit that never fired
    buf = np.concatenate([np.zeros(3, np.float32), a.reshape(-1)])
    stats, fired = F.outputs(buf, np.array([3, 3 + 96]), 8, 96, 0.1, 0.9, unit_max=True)
    for j in range(2):
        x = a[j].astype(np.float64)
        np.testing.assert_allclose(
            stats[j], [x.sum(), (x * x).sum(), 96, np.sum((x < 0.1) | (x > 0.9))]
        )
        np.testing.assert_array_equal(fired[j], (a[j] > 0).any(axis=0))
    assert not fired[1, 3]


def test_nan_gives_a_nan_max_and_is_counted(monkeypatch):
    buf = np.array([1.0, np.nan, -3.0, np.inf, 0.0], dtype=np.float32)
    m = F.moments(buf, np.array([0, 3]), np.array([3, 2]))
    assert np.isnan(m[0, 2]) and m[1, 2] == np.inf and m[1, 3] == 1
    np.testing.assert_array_equal(
        F.nonfinite_counts(buf, np.array([0, 3]), np.array([3, 2])), [1, 1]
    )
