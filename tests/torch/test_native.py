"""The fused C reductions (gradprobe._fused) against float64 numpy, shape by shape."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gradprobe.torch import _native
from gradprobe.torch._activations import SIGMOID, TANH

# sizes around the kernels' 256-element runs and SIMD widths, and one large tensor
SIZES = [1, 7, 255, 256, 257, 4099, 300_001]


def test_the_fused_reductions_are_built():
    assert _native.available(), "gradprobe._fused is missing: reinstall with a C compiler"


def reference_moments(t: torch.Tensor) -> np.ndarray:
    x = t.detach().double().numpy().ravel()
    return np.array([x.sum(), (x * x).sum(), np.abs(x).max(), (x == 0).sum()])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_moments_and_squared_norms_match_float64_numpy(dtype):
    gen = torch.Generator().manual_seed(0)
    ts = [torch.randn(n, generator=gen).to(dtype) for n in SIZES]
    ts[2][::3] = 0  # exact zeros are counted
    ts.append(torch.randn(40, 30, generator=gen).to(dtype).t())  # not contiguous
    got = _native.moments(ts)
    assert got is not None
    sq = _native.sq_norms(ts)
    assert sq is not None
    for t, row, q in zip(ts, got, sq, strict=True):
        ref = reference_moments(t)
        np.testing.assert_allclose(row, ref, rtol=1e-12 if dtype == torch.float64 else 1e-6)
        np.testing.assert_allclose(q, ref[1], rtol=1e-12 if dtype == torch.float64 else 1e-5)


def test_passes_over_millions_of_elements_keep_their_precision():
    gen = torch.Generator().manual_seed(3)
    ts = [torch.randn(n, generator=gen) for n in (1_500_000, 700_001, 3)]
    ts[1][5] = 0.0
    got, sq = _native.moments(ts), _native.sq_norms(ts)
    assert got is not None and sq is not None
    for t, row, q in zip(ts, got, sq, strict=True):
        ref = reference_moments(t)
        np.testing.assert_allclose(row, ref, rtol=1e-9)
        np.testing.assert_allclose(q, ref[1], rtol=1e-5)
    assert got[1, 3] == ref_zeros(ts[1])
    one = _native.sq_norm_one(ts[0])
    assert one is not None and math.isclose(one, reference_moments(ts[0])[1], rel_tol=1e-5)


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_a_large_pass_split_across_threads_gives_each_array_its_own_numbers(monkeypatch, threads):
    # over a million elements in all: the pass is cut into equal ranges of the arrays laid end to
    # end, so ranges start and end inside arrays; each array's numbers must come out whole
    monkeypatch.setattr(_native, "_threads", lambda: threads)
    gen = torch.Generator().manual_seed(11)
    ts = [torch.randn(n, generator=gen) for n in (5, 400_001, 3, 900_017, 250_000, 1)]
    ts[3][-2] = 0.0  # a zero, and the largest value, near the end: in the last range
    ts[3][-1] = 50.0
    ts[1][300_000] = -40.0  # the largest |x| of an array that straddles the first cut
    ts[2][1] = float("nan")
    got, sq = _native.moments(ts), _native.sq_norms(ts)
    assert got is not None and sq is not None
    for i, (t, row, q) in enumerate(zip(ts, got, sq, strict=True)):
        if i == 2:
            assert math.isnan(row[0]) and math.isnan(row[2]) and math.isnan(q)
            continue
        ref = reference_moments(t)
        np.testing.assert_allclose(row, ref, rtol=1e-9)
        np.testing.assert_allclose(q, ref[1], rtol=1e-5)
    assert got[1, 2] == 40.0 and got[3, 2] == 50.0
    assert got[3, 3] == ref_zeros(ts[3]) >= 1
    a = [t for i, t in enumerate(ts) if i != 2]
    b = [t + 1e-3 for t in a]
    d = _native.sq_dists(a, b)
    assert d is not None
    for x, y, v in zip(a, b, d, strict=True):
        assert math.isclose(v, float(((x.double() - y.double()) ** 2).sum()), rel_tol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_squared_distances_of_pairs_match_float64_numpy(dtype):
    gen = torch.Generator().manual_seed(5)
    a = [torch.randn(n, generator=gen).to(dtype) for n in (*SIZES, 2_000_003)]
    b = [x + 1e-3 * torch.randn(x.shape, generator=gen).to(dtype) for x in a]
    got = _native.sq_dists(a, b)
    assert got is not None
    for x, y, d in zip(a, b, got, strict=True):
        want = float(((x.double() - y.double()) ** 2).sum())
        assert math.isclose(d, want, rel_tol=1e-12), (x.numel(), d, want)
    assert _native.sq_dists([torch.ones(3)], [torch.ones(4)]) is None  # shapes must match


def ref_zeros(t: torch.Tensor) -> int:
    return int((t == 0).sum())


def test_moments_keep_nan_in_max_abs_like_numpy():
    t = torch.tensor([1.0, float("nan"), -3.0])
    u = torch.tensor([1.0, float("inf"), -3.0])
    got = _native.moments([t, u])
    assert got is not None
    assert math.isnan(got[0, 2]) and math.isnan(got[0, 0])
    assert got[1, 2] == math.inf and got[1, 1] == math.inf


def reference_outputs(t: torch.Tensor, low: float, high: float, unit_dim: int | None):
    x = t.detach().double().numpy()
    f = x.ravel()
    stats = [f.sum(), (f * f).sum(), f.size, ((f < low) | (f > high)).sum()]
    alive = None
    if unit_dim is not None:
        alive = (np.moveaxis(x, unit_dim, 0).reshape(x.shape[unit_dim], -1) > 0).any(axis=1)
    return np.array(stats, dtype=np.float64), alive


@pytest.mark.parametrize(
    "shape, unit_dim",
    [
        ((512, 64), -1),
        ((3, 300), -1),
        ((4, 5, 7, 9), 1),
        ((2, 3, 600), 1),
        ((1000,), None),
        ((601, 512), -1),
        ((5, 64, 32, 32), 1),
    ],
)
@pytest.mark.parametrize("band", [SIGMOID, TANH, None])
def test_output_stats_match_float64_numpy(shape, unit_dim, band):
    gen = torch.Generator().manual_seed(1)
    outs = [torch.randn(*shape, generator=gen) for _ in range(3)]
    if band is SIGMOID:
        outs = [torch.sigmoid(3 * o) for o in outs]
    elif band is None:
        outs = [torch.relu(o - 1.5) for o in outs]  # some units dead for the whole batch
    low, high = (band.low, band.high) if band is not None else (-math.inf, math.inf)
    many = _native.output_stats(outs, low, high, unit_dim)
    assert many is not None
    for k, o in enumerate(outs):
        ref, ref_alive = reference_outputs(o, low, high, unit_dim)
        one = _native.output_stats_one(o, low, high, unit_dim)
        assert one is not None
        for stats, alive in ((many[0][k], None if many[1] is None else many[1][k]), one):
            np.testing.assert_allclose(stats, ref, rtol=2e-6, atol=1e-6 * ref[2])
            assert stats[3] == ref[3]  # counts are exact
            if unit_dim is None:
                assert alive is None
            else:
                np.testing.assert_array_equal(alive, ref_alive)


def test_a_mean_near_zero_keeps_its_digits():
    # float32 runs would lose a mean 1e-4 of the spread; the kernels sum in float64
    gen = torch.Generator().manual_seed(2)
    t = torch.randn(512, 64, generator=gen)
    t -= t.mean() - 1e-4
    stats, _ = _native.output_stats([t], -math.inf, math.inf, None)  # type: ignore[misc]
    ref = t.double().sum().item()
    assert abs(stats[0, 0] - ref) <= 1e-7 * t.abs().sum().item()


def test_what_the_kernels_cannot_read_is_left_to_the_caller():
    assert _native.moments([torch.ones(3, dtype=torch.int64)]) is None
    assert _native.moments([torch.ones(3), torch.ones(3, dtype=torch.float64)]) is None
    assert _native.sq_norm_one(torch.ones(4, 4).t()[:, :2]) is None  # not contiguous: deferred
    assert _native.output_stats_one(torch.ones(3, dtype=torch.complex64), 0, 1, None) is None
