"""gradprobe.stats against slow, obvious references on the raw values; rows carry ``skipped``."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from gradprobe import stats as S
from gradprobe.records import TABLES
from gradprobe.torch._rows import LayerMeta, ParamMeta, PendingRows

SCALES = [1e-30, 1e-20, 1e-10, 1.0, 1e10, 1e20, 1e30]


def moments(x: np.ndarray) -> tuple[float, float, float, float, float, float]:
    """What an adapter hands over: float64 sum, sum of squares, max|x|, zeros, non-finite, n."""
    d = x.astype(np.float64)
    return d.sum(), (d * d).sum(), np.abs(d).max(), (d == 0).sum(), (~np.isfinite(d)).sum(), d.size


def _raw(scale: float, seed: int, n: int = 257) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return scale * (rng.standard_normal(n) + 0.5)


@pytest.mark.parametrize("scale", SCALES)
def test_param_columns_match_numpy_on_raw_values_from_1e_30_to_1e30(scale):
    x, w, w_after = _raw(scale, 0), _raw(1.0, 1), _raw(1.0, 1) + _raw(1e-3, 2)
    total, sumsq, max_abs, zeros, nonfinite, n = moments(x)
    u_sumsq = ((w_after - w) ** 2).sum()
    cols = S.param_columns(total, sumsq, max_abs, zeros, nonfinite, (w * w).sum(), u_sumsq, n)
    ref = {
        "grad_norm": np.linalg.norm(x),
        "grad_rms": np.sqrt(np.mean(x**2)),
        "grad_mean": np.mean(x),
        "grad_std": np.std(x),
        "grad_max_abs": np.max(np.abs(x)),
        "grad_zero_frac": np.mean(x == 0),
        "grad_nonfinite": 0.0,
        "weight_norm": np.linalg.norm(w),
        "update_norm": np.linalg.norm(w_after - w),
        "update_ratio": np.linalg.norm(w_after - w) / np.linalg.norm(w),
    }
    assert set(cols) == set(TABLES["params"][5:]) - {"pe_grad_rms", "rank", "skipped", "tier"}
    for c, v in ref.items():
        assert cols[c] == pytest.approx(v, rel=1e-12, abs=0.0), c


@pytest.mark.parametrize("scale", SCALES)
def test_layer_columns_match_numpy_on_raw_values(scale):
    a = np.tanh(_raw(1.0, 3).reshape(1, -1) * 3) * scale  # one row
    total, sumsq, _, _, _, n = moments(a)
    band = S.TANH.low * scale, S.TANH.high * scale
    sat = ((a < band[0]) | (a > band[1])).sum()
    grad = _raw(scale, 4)
    cols = S.layer_columns(total, sumsq, n, sat, 0.25, (grad * grad).sum(), True)
    assert cols["act_mean"] == pytest.approx(a.mean(), rel=1e-12)
    assert cols["act_std"] == pytest.approx(a.std(), rel=1e-12)
    assert cols["act_rms"] == pytest.approx(np.sqrt(np.mean(a**2)), rel=1e-12)
    assert cols["saturated_frac"] == pytest.approx(np.mean((a < band[0]) | (a > band[1])))
    assert cols["dead_frac"] == 0.25
    assert cols["backward_norm"] == pytest.approx(np.linalg.norm(grad), rel=1e-12)


def test_values_from_1e_30_to_1e30_in_one_tensor_are_exact():
    x = np.array([1e-30, -1e-30, 3e30, -2e30, 7.0, 0.0])
    total, sumsq, *_ = moments(x)
    assert S.norm(sumsq) == pytest.approx(np.linalg.norm(x), rel=1e-15)
    assert S.rms(sumsq, x.size) == pytest.approx(np.sqrt(np.mean(x * x)), rel=1e-15)
    assert S.std(total, sumsq, x.size) == pytest.approx(np.std(x), rel=1e-12)
    tiny = np.full(1000, 1e-30)
    t_total, t_sumsq, *_ = moments(tiny)
    assert S.norm(t_sumsq) == pytest.approx(np.linalg.norm(tiny), rel=1e-14)
    assert S.std(t_total, t_sumsq, tiny.size) <= 1e-8 * 1e-30  # rounding noise only


def test_std_is_noise_free_when_mean_and_spread_are_comparable():
    for scale in SCALES:
        x = _raw(scale, 5, n=10_000)
        total, sumsq, *_ = moments(x)
        assert S.std(total, sumsq, x.size) == pytest.approx(np.std(x), rel=1e-10)


def test_all_zero_gradients_give_zeros_not_nan_or_inf():
    """A fully masked batch (loss * 0): every gradient statistic is 0, the ratio 0 (weights ok)."""
    cols = S.param_columns(0.0, 0.0, 0.0, 64.0, 0.0, 4.0, 0.0, 64)
    for c in ("grad_norm", "grad_rms", "grad_mean", "grad_std", "grad_max_abs", "update_ratio"):
        assert cols[c] == 0.0, c
    assert cols["grad_zero_frac"] == 1.0


def test_ratio_zero_over_zero_is_nan_and_only_a_positive_over_zero_is_inf():
    with np.errstate(all="raise"):  # and no warning
        r = S.ratio([0.0, 1.0, 0.0, np.nan], [0.0, 0.0, 2.0, 1.0])
    assert np.isnan(r[0]) and r[1] == math.inf and r[2] == 0.0 and np.isnan(r[3])
    cols = S.param_columns(0.0, 0.0, 0.0, 8.0, 0.0, 0.0, 0.0, 8)  # a zero bias that did not move
    assert np.isnan(cols["update_ratio"])


def test_not_measured_stays_nan():
    cols = S.layer_columns(np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, True, True)
    assert all(np.isnan(v) for v in cols.values())
    p = S.param_columns(1.0, 1.0, 1.0, 0.0, 0.0, np.nan, np.nan, 1)
    assert np.isnan(p["weight_norm"]) and np.isnan(p["update_ratio"])


def test_family_masks_turn_fractions_off():
    cols = S.layer_columns(
        [1.0, 1.0], [1.0, 1.0], [2, 2], [1, 1], [0.5, 0.5], [1, 1], [1, 0], [0, 1]
    )
    assert cols["saturated_frac"][0] == 0.5 and np.isnan(cols["saturated_frac"][1])
    assert np.isnan(cols["dead_frac"][0]) and cols["dead_frac"][1] == 0.5


def test_saturation_bands_are_where_the_slope_is_under_one_percent():
    s = np.array([[S.SIGMOID.low - 1e-9, S.SIGMOID.low + 1e-9, 0.5]])
    assert S.saturated_count(s, S.SIGMOID)[0] == 1
    lo = S.SIGMOID.low
    assert lo * (1 - lo) == pytest.approx(0.0025)
    assert 1 - S.TANH.high**2 == pytest.approx(0.01)
    assert S.saturated_count(np.array([[5.0, -5.0]]), S.BY_NAME["relu"])[0] == 0


def test_one_leaky_slope_in_theory_and_in_training():
    from gradprobe.theory.activations import LEAKY_SLOPE, get_activation

    assert LEAKY_SLOPE is S.LEAKY_SLOPE == 0.2
    assert get_activation("leaky_relu").slopes == (S.LEAKY_SLOPE, 1.0)
    torch = pytest.importorskip("torch")
    from gradprobe.experiments.torch_backend import _ACT_MODULES
    from gradprobe.lab.batched import _FUNCS

    assert _ACT_MODULES["leaky_relu"]().negative_slope == S.LEAKY_SLOPE
    z = torch.tensor([-1.0, 2.0])
    assert _FUNCS["leaky_relu"](z).tolist() == pytest.approx([-S.LEAKY_SLOPE, 2.0])


def test_stats_imports_neither_torch_nor_tensorflow():
    code = (
        "import sys, gradprobe.stats; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow', 'keras')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


# ------------------------------------------------------------ PendingRows: the skipped flag
class _Sink:
    def __init__(self) -> None:
        self.chunks: list[dict] = []

    def extend(self, columns) -> None:
        self.chunks.append(dict(columns))


def _pending() -> tuple[PendingRows, _Sink, _Sink]:
    params, layers = _Sink(), _Sink()
    return PendingRows(params, layers), params, layers  # type: ignore[arg-type]


def test_rows_carry_skipped_in_both_tables():
    rows, params, layers = _pending()
    pm = ParamMeta(np.array(["0"]), np.array(["weight"]), np.array([0]), np.array([4]))
    lm = LayerMeta(np.array(["0"]), np.array([0]), np.array(["Linear"]), np.array([""]),
                   np.array([False]))  # fmt: skip
    g = np.array([[0.0, 4.0, 1.0, 0.0]])
    one, nan = np.array([1.0]), np.array([np.nan])
    for step, skipped in ((0, False), (1, True), (2, False)):
        rows.add_params(step, pm, g, one, one, nan, np.array([0]), skipped=skipped)
        rows.add_layers(step, lm, np.array([[0.0, 1.0, 4.0, 0.0]]), nan, one, skipped=skipped)
    rows.add_params(3, pm, g, one, one, nan, np.array([0]))  # default: not skipped
    rows.materialize()
    p = np.concatenate([c["skipped"] for c in params.chunks])
    lay = np.concatenate([c["skipped"] for c in layers.chunks])
    assert p.dtype == bool and p.tolist() == [False, True, False, False]
    assert lay.dtype == bool and lay.tolist() == [False, True, False]
    assert np.concatenate([c["grad_norm"] for c in params.chunks]).tolist() == [2.0] * 4


@pytest.mark.parametrize("scale", [1e-30, 1e25])
def test_batched_lab_layer_statistics_are_float64_from_1e_30_to_1e25(scale):
    """Moments in float64 on torch's side, columns from gradprobe.stats: exact at any scale."""
    torch = pytest.importorskip("torch")
    from gradprobe.lab.batched import _layer_stats
    from gradprobe.records import LAYER_STATS

    a = torch.full((2, 4, 8), scale) * torch.tensor([1.0, -1.0]).repeat(16).reshape(1, 4, 8)
    grad = torch.full((2, 4, 8), scale)
    got = dict(zip(LAYER_STATS, _layer_stats(a, S.BY_NAME["relu"], grad)[0], strict=True))
    x = a[0].double().numpy().ravel()
    assert got["act_rms"] == pytest.approx(np.sqrt(np.mean(x * x)), rel=1e-12)
    assert got["act_std"] == pytest.approx(np.std(x), rel=1e-12)
    assert got["act_mean"] == pytest.approx(0.0, abs=1e-12 * scale)
    assert got["backward_norm"] == pytest.approx(np.linalg.norm(grad[0].double()), rel=1e-12)
    assert got["dead_frac"] == 0.5 and np.isnan(got["saturated_frac"])  # odd units never fire
