"""The fused C reductions (gradprobe._fused) against float64 numpy, shape by shape."""

from __future__ import annotations

import functools
import math
import warnings

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


# -- exact from 1e-30 to 1e30 per element ------------------------------------------------------
# Every sum and sum of squares is accumulated in float64 from float64 squares: float32 squares
# underflow to 0 below ~1e-23 per element and overflow to inf above ~1.8e19, and a float32
# accumulator keeps 7 digits. These tests hold each function to float64 rounding (rtol 1e-10).

MAGNITUDES = [1e-30, 1e-24, 1e-20, 1.0, 1e19, 1e22, 1e30]
EXACT_SIZES = [1, 15, 16, 17, 1000, 1_100_000]  # the last alone is over the thread split threshold
RTOL = 1e-10
HALF_MAGNITUDES = [1e-4, 1.0, 1e4]  # float16 holds 6e-8 .. 65504


def magnitude_cases():
    for m in MAGNITUDES:
        for dtype in (torch.float32, torch.float64, torch.bfloat16):
            yield pytest.param(m, dtype, id=f"{m:g}-{str(dtype)[6:]}")
    for m in HALF_MAGNITUDES:
        yield pytest.param(m, torch.float16, id=f"{m:g}-float16")


@functools.cache
def unit_values(n: int) -> torch.Tensor:
    """n float64 values of either sign with |x| in [1/2, 2], about one in eight exactly zero
    (made once per size: every magnitude scales the same values)."""
    gen = torch.Generator().manual_seed(n)
    mag = torch.empty(n, dtype=torch.float64).uniform_(0.5, 2.0, generator=gen)
    sign = torch.randint(0, 2, (n,), generator=gen).double() * 2 - 1
    return mag * sign * (torch.randint(0, 8, (n,), generator=gen) != 0)


def scaled(n: int, m: float, dtype: torch.dtype) -> torch.Tensor:
    return (m * unit_values(n)).to(dtype)


def f64(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy().ravel()


def assert_sum(got: float, x: np.ndarray) -> None:
    """A signed sum: float64 rounding relative to sum |x| (the sum itself may cancel)."""
    assert abs(got - x.sum()) <= RTOL * np.abs(x).sum() + 1e-300, (got, x.sum())


def assert_sumsq(got: float, x: np.ndarray) -> None:
    want = (x * x).sum()
    assert math.isfinite(got) and math.isclose(got, want, rel_tol=RTOL, abs_tol=0.0), (got, want)
    assert (got == 0) == (want == 0)


@pytest.mark.parametrize("m, dtype", list(magnitude_cases()))
def test_moments_norms_and_distances_are_exact_from_1e_minus_30_to_1e30(monkeypatch, m, dtype):
    monkeypatch.setattr(_native, "_threads", lambda: 2)  # the large pass is split in two
    ts = [scaled(n, m, dtype) for n in EXACT_SIZES]
    ts[1].zero_()  # an all-zero tensor: 0, not a tiny number
    moments, sq = _native.moments(ts), _native.sq_norms(ts)
    assert moments is not None and sq is not None
    others = [t + (t * 1e-3 + m * 1e-2).to(dtype) for t in ts]
    dists = _native.sq_dists(ts, others)
    assert dists is not None
    for t, u, row, q, d in zip(ts, others, moments, sq, dists, strict=True):
        x = f64(t)
        assert_sum(row[0], x)
        assert_sumsq(row[1], x)
        assert_sumsq(q, x)
        assert row[2] == np.abs(x).max()  # max |x| exact
        assert row[3] == (x == 0).sum()  # zeros counted exactly
        assert_sumsq(d, x - f64(u))
        if dtype in (torch.float32, torch.float64):  # read in place
            one = _native.sq_norm_one(t)
            assert one is not None
            assert_sumsq(one, x)


def units_with_some_dead(shape: tuple[int, ...], unit_dim: int, m: float, dtype: torch.dtype):
    """Values of magnitude m; every third unit is never positive (a dead unit)."""
    t = scaled(math.prod(shape), m, dtype).reshape(shape)
    t = t.movedim(unit_dim, 0).clone()
    t[::3] = -t[::3].abs()
    return t.movedim(0, unit_dim).contiguous()


OUTPUT_SHAPES = [
    ((1,), None),
    ((15,), None),
    ((16,), None),
    ((17,), None),
    ((1000,), None),
    ((17, 16), -1),  # units along the last dimension
    ((4, 17, 15), 1),  # units with positions (a convolution's channels)
    ((1100, 1000), -1),
]


@pytest.mark.parametrize("m, dtype", list(magnitude_cases()))
def test_output_stats_are_exact_from_1e_minus_30_to_1e30(m, dtype):
    for shape, unit_dim in OUTPUT_SHAPES:
        if unit_dim is None:
            t = scaled(shape[0], m, dtype)
        else:
            t = units_with_some_dead(shape, unit_dim, m, dtype)
        x = f64(t)
        # a band that the values cross at every magnitude, [-m, m], and none
        for low, high in ((-m, m), (-math.inf, math.inf)):
            ref, alive = reference_outputs(t.double(), low, high, unit_dim)
            many = _native.output_stats([t, t], low, high, unit_dim)
            assert many is not None
            results = [(many[0][k], None if many[1] is None else many[1][k]) for k in (0, 1)]
            if dtype in (torch.float32, torch.float64):
                one = _native.output_stats_one(t, low, high, unit_dim)
                assert one is not None
                results.append(one)
            for stats, got_alive in results:
                assert_sum(stats[0], x)
                assert_sumsq(stats[1], x)
                assert stats[2] == x.size
                assert stats[3] == ref[3]  # values outside the band, counted exactly
                if unit_dim is None:
                    assert got_alive is None
                else:
                    np.testing.assert_array_equal(got_alive, alive)


def test_a_float32_square_sum_of_tiny_backward_signals_is_not_zero():
    # the case: a backward signal of ~1e-24 per element was recorded as 0
    t = torch.full((4096,), 1e-24)
    want = 4096 * float(t[0]) ** 2
    for got in (
        _native.sq_norms([t])[0],
        _native.sq_norm_one(t),
        _native.output_stats_one(t, -math.inf, math.inf, None)[0][1],
    ):
        assert got is not None and math.isclose(got, want, rel_tol=1e-12), (got, want)


def test_a_float32_square_sum_of_huge_values_is_finite():
    # values ~4.5e22 became inf (then "non_finite"); weights above ~1.8e19 overflowed
    t = torch.full((1000,), 4.5e22)
    want = 1000 * float(t[0]) ** 2
    for got in (
        _native.sq_norms([t])[0],
        _native.sq_norm_one(t),
        _native.output_stats_one(t, -math.inf, math.inf, None)[0][1],
    ):
        assert got is not None and math.isclose(got, want, rel_tol=1e-12), (got, want)


# -- only plain dense CPU tensors reach C ------------------------------------------------------


def every_function(t: torch.Tensor) -> dict[str, object]:
    """What each exported function returns for t (None = left to the caller)."""
    return {
        "moments": _native.moments([t]),
        "sq_norms": _native.sq_norms([t]),
        "sq_dists": _native.sq_dists([t], [t]),
        "output_stats": _native.output_stats([t], -1.0, 1.0, None),
        "output_stats_one": _native.output_stats_one(t, -1.0, 1.0, None),
        "sq_norm_one": _native.sq_norm_one(t),
    }


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def one_process_group():
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available():
        pytest.skip("torch.distributed is not built")
    started = not dist.is_initialized()
    if started:
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1
        )
    yield
    if started:
        dist.destroy_process_group()


def test_a_dtensor_is_left_to_the_caller_not_read_at_address_zero(one_process_group):
    # FSDP2's parameters are DTensors whose data_ptr() is 0: the C pass died with SIGSEGV
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (1,))
    d = distribute_tensor(torch.randn(8, 4), mesh, [Shard(0)])
    assert d.data_ptr() == 0
    for t in (d, torch.nn.Parameter(d)):  # a Parameter of a DTensor is still a DTensor
        assert every_function(t) == dict.fromkeys(every_function(t))
    # nor mixed in with plain tensors
    assert _native.moments([torch.ones(3), d]) is None
    assert _native.sq_dists([torch.ones(8, 4)], [d]) is None


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: torch.eye(4).to_sparse(), id="sparse_coo"),
        pytest.param(lambda: torch.eye(4).to_sparse_csr(), id="sparse_csr"),
        pytest.param(lambda: torch.eye(4).to_mkldnn(), id="mkldnn"),
        pytest.param(lambda: torch.ones(4, device="meta"), id="meta"),
        pytest.param(
            lambda: torch.nested.nested_tensor([torch.ones(2), torch.ones(3)]), id="nested"
        ),
    ],
)
def test_tensors_that_are_not_plain_dense_cpu_tensors_are_left_to_the_caller(make):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nested and sparse CSR are prototypes that say so
        t = make()
    assert every_function(t) == dict.fromkeys(every_function(t))


class Wrapped(torch.Tensor):
    """A tensor subclass that dispatches its ops itself (as DTensor or FakeTensor do)."""

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def test_a_tensor_subclass_is_left_to_the_caller():
    t = torch.ones(5).as_subclass(Wrapped)
    assert every_function(t) == dict.fromkeys(every_function(t))


def test_a_tensor_whose_storage_was_freed_is_left_to_the_caller():
    # FSDP frees a parameter's storage between uses: numel() > 0 but data_ptr() == 0
    t = torch.randn(10)
    t.untyped_storage().resize_(0)
    assert t.data_ptr() == 0
    assert every_function(t) == dict.fromkeys(every_function(t))
    assert _native.moments([torch.ones(2), t]) is None


def test_parameters_and_flat_parameter_like_subclasses_are_read():
    class Flat(torch.nn.Parameter):  # as FSDP1's FlatParameter: a Parameter, no dispatch of its own
        pass

    for t in (torch.nn.Parameter(torch.full((6,), 2.0)), Flat(torch.full((6,), 2.0))):
        got = every_function(t)
        assert all(v is not None for v in got.values()), got
        assert got["sq_norm_one"] == 24.0
        assert got["moments"][0].tolist() == [12.0, 24.0, 2.0, 0.0]


def test_output_stats_one_gives_each_call_its_own_units_alive():
    """The per-unit scratch array is shared by calls on one shape: a result handed out must not
    change when the next output of that shape is read (two forwards of a step, or two threads)."""
    a = torch.zeros(8, 5)
    a[:, 1] = 1.0
    b = torch.zeros(8, 5)
    b[:, 3] = 1.0
    _, alive_a = _native.output_stats_one(a, -math.inf, math.inf, -1)
    _, alive_b = _native.output_stats_one(b, -math.inf, math.inf, -1)
    assert alive_a.tolist() == [False, True, False, False, False]
    assert alive_b.tolist() == [False, False, False, True, False]
    # the same from another thread, while this thread's scratch holds b's maxima
    import threading

    got = []
    t = threading.Thread(target=lambda: got.append(_native.output_stats_one(a, 0, 1, -1)[1]))
    t.start()
    t.join()
    assert got[0].tolist() == alive_a.tolist() and alive_b[3]
