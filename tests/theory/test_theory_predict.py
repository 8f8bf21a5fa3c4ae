"""predict_mlp against theory.md 9.2-9.3, plus its validation and JSON form."""

from __future__ import annotations

import json

import pytest

from gradprobe.errors import UnknownChoiceError, UsageError
from gradprobe.theory import predict_mlp, residual_ratio
from gradprobe.theory.factors import batchnorm_gain, hanin_beta, seed_spread

W = [64] * 10 + [10]

# activation, init, gain, per-example ||grad W1|| / ||grad W10||, ||delta^1|| / ||delta^10||
TABLE_9_2 = [
    ("sigmoid", "glorot_uniform", 1.0, 5.19e-6, 2.67e-6),
    ("relu", "glorot_uniform", 1.0, 1.315, 0.058),
    ("tanh", "glorot_uniform", 1.0, 1.535, 0.370),
    ("relu", "he_uniform", 1.0, 1.00, None),
    ("sigmoid", "glorot_uniform", 4.0, 0.0271, 0.0164),
    ("sigmoid", "torch_default", 1.0, 4.22e-8, None),
    ("relu", "torch_default", 1.0, 5.64e-3, None),
    ("tanh", "torch_default", 1.0, 0.0574, None),
]


@pytest.mark.parametrize(("act", "init", "gain", "grad", "delta"), TABLE_9_2)
def test_table_9_2(act: str, init: str, gain: float, grad: float, delta: float | None) -> None:
    """theory.md's numbers are plain gradient independence (no readout coupling)."""
    p = predict_mlp(W, act, init, gain=gain, readout_coupling=False)
    assert p.first_to_last == pytest.approx(grad, rel=0.002)
    assert p.grad_norm_by_depth[-1] == 1.0
    assert p.independent_grad_norm_by_depth == p.grad_norm_by_depth
    if delta is not None:
        assert p.delta_norm_by_depth[0] == pytest.approx(delta, rel=0.006)


# activation, init -> first/readout ratio with the softmax readout's coupling and the logit-scale
# spread (10 classes), and its rise over gradient independence
COUPLED = [
    ("relu", "he_uniform", 1.07222, 1.07222),
    ("relu", "glorot_uniform", 1.31565, 1.00035),
    ("sigmoid", "glorot_uniform", 5.20409e-6, 1.00300),
    ("tanh", "glorot_uniform", 1.53711, 1.00119),
    ("tanh", "torch_default", 0.0574203, 1.00002),
]


@pytest.mark.parametrize(("act", "init", "ratio", "rise"), COUPLED)
def test_softmax_readout_coupling(act: str, init: str, ratio: float, rise: float) -> None:
    p = predict_mlp(W, act, init)
    assert p.loss == "cross_entropy" and p.readout_coupling
    assert p.first_to_last == pytest.approx(ratio, rel=2e-4)
    assert p.first_to_last / p.independent_grad_norm_by_depth[0] == pytest.approx(rise, abs=2e-4)
    assert p.grad_norm_by_depth[-1] == 1.0


def test_typical_net() -> None:
    """The geometric mean over nets: ReLU/Glorot above the ensemble value, sigmoid below."""
    relu = predict_mlp(W, "relu", "glorot_uniform", batch_size=64)
    assert relu.first_to_last_typical / relu.first_to_last == pytest.approx(1.066, abs=2e-3)
    sig = predict_mlp(W, "sigmoid", "glorot_uniform")
    assert sig.first_to_last_typical / sig.first_to_last == pytest.approx(0.987, abs=2e-3)
    assert predict_mlp([64] * 200 + [10], "tanh").first_to_last_typical > 0
    assert predict_mlp([8, 1], "tanh").first_to_last_typical == 1.0  # no hidden layer


def test_single_output_losses() -> None:
    """One output: the logit-scale spread outweighs the coupling (ReLU/He measured 0.95, 0.98)."""
    w = [64] * 10 + [1]
    assert predict_mlp(w, "relu", "he_uniform").loss == "mse"
    mse = predict_mlp(w, "relu", "he_uniform", loss="mse")
    bce = predict_mlp(w, "relu", "he_uniform", loss="binary_cross_entropy")
    assert mse.first_to_last == pytest.approx(0.93886, rel=2e-4)
    assert bce.first_to_last == pytest.approx(0.99453, rel=2e-4)
    plain = predict_mlp(w, "relu", "he_uniform", loss="mse", readout_coupling=False)
    assert not plain.readout_coupling and plain.first_to_last == pytest.approx(1.0)


def test_sigmoid_layers_4_to_8() -> None:
    p = predict_mlp(W, "sigmoid", "glorot_uniform", readout_coupling=False)
    expected = [2.28e-4, 9.64e-4, 4.08e-3, 1.73e-2, 7.33e-2]
    assert p.grad_norm_by_depth[3:8] == pytest.approx(expected, rel=0.003)


def test_relu_glorot_activation_second_moments_halve() -> None:
    p = predict_mlp(W, "relu", "glorot_uniform")
    assert [lay.a for lay in p.layers[:9]] == pytest.approx([0.5**k for k in range(1, 10)])


# case, B -> two-point first/readout ratio of batch-mean gradients (theory.md 9.3)
TABLE_9_3 = [
    (("sigmoid", "glorot_uniform", 1.0), {16: 3.99e-6, 64: 2.63e-6, 256: 1.45e-6, 1024: 7.5e-7}),
    (("relu", "he_uniform", 1.0), {16: 0.61, 64: 0.35, 256: 0.18, 1024: 0.093}),
    (("sigmoid", "glorot_uniform", 4.0), {16: 0.0110, 64: 0.0057, 256: 0.0029, 1024: 0.0015}),
    (("relu", "glorot_uniform", 1.0), {16: 1.31, 64: 1.30}),
]


@pytest.mark.parametrize(("case", "by_batch"), TABLE_9_3)
def test_table_9_3_two_point(case: tuple[str, str, float], by_batch: dict[int, float]) -> None:
    act, init, gain = case
    for b, expected in by_batch.items():
        p = predict_mlp(W, act, init, gain=gain, batch_size=b)
        assert p.batch_grad_norm_by_depth is not None
        assert p.batch_grad_norm_by_depth[0] == pytest.approx(expected, rel=0.03)


def test_hanin_band_and_section_7_factors() -> None:
    assert hanin_beta([64] * 10) == pytest.approx(0.156, abs=1e-3)
    assert seed_spread(hanin_beta([64] * 10)) == pytest.approx(2.4, abs=0.05)
    p = predict_mlp(W, "relu", "he_uniform")
    low, high = p.grad_norm_band
    assert low[0] < p.first_to_last < high[0]
    assert residual_ratio(1.0, 20) == 1024.0
    assert batchnorm_gain() ** 0.5 == pytest.approx(1.2112, abs=1e-4)


def test_verdicts() -> None:
    assert predict_mlp(W, "sigmoid", "glorot_uniform").verdict.kind == "vanishing"
    assert predict_mlp(W, "relu", "glorot_uniform").verdict.kind == "vanishing"  # delta shrinks
    assert predict_mlp(W, "relu", "he_normal").verdict.kind == "critical"
    deep = [64] * 41
    assert predict_mlp(deep, "tanh", init=None, weight_var=4.0, bias_var=0).verdict.kind == (
        "exploding"
    )
    assert predict_mlp(deep, "relu", init=None, weight_var=2.5, bias_var=0).verdict.kind == (
        "exploding"
    )


def test_to_dict_is_json() -> None:
    d = json.loads(json.dumps(predict_mlp(W, "sigmoid", batch_size=32).to_dict(), allow_nan=False))
    assert {"grad_norm_by_depth", "chi1", "depth_scale", "verdict", "layers"} <= set(d)
    assert len(d["grad_norm_by_depth"]) == 10 and d["grad_norm_by_depth"][-1] == 1.0


def test_per_layer_activations_and_variances() -> None:
    p = predict_mlp([4, 8, 8, 2], ["tanh", "relu"], init=None, weight_var=[1, 2, 1], bias_var=0.1)
    assert [lay.activation for lay in p.layers] == ["tanh", "relu", "linear"]
    assert p.layers[1].q == pytest.approx(2 * p.layers[0].a + 0.1)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"widths": [64]}, UsageError),
        ({"widths": [64, 0, 1]}, UsageError),
        ({"widths": [64, -3, 1]}, UsageError),
        ({"widths": [8, 8, 1], "activation": "softsign"}, UnknownChoiceError),
        ({"widths": [8, 8, 1], "init": "zeros"}, UnknownChoiceError),
        ({"widths": [8, 8, 1], "init": None}, UsageError),
        ({"widths": [8, 8, 1], "weight_var": [1.0]}, UsageError),
        ({"widths": [8, 8, 1], "activation": ["relu", "tanh"]}, UsageError),
        ({"widths": [8, 8, 1], "batch_size": 0}, UsageError),
        ({"widths": [8, 8, 1], "loss": "hinge"}, UnknownChoiceError),
        ({"widths": [8, 8, 1], "loss": "cross_entropy"}, UsageError),
    ],
)
def test_bad_input_raises_clear_errors(kwargs: dict, error: type[Exception]) -> None:  # type: ignore[type-arg]
    with pytest.raises(error, match=r"expected|must|give|needs"):
        predict_mlp(**kwargs)


def test_batch_prediction_with_a_binary_readout() -> None:
    """B = 1 is the per-example (gradient-independence) prediction; larger B adds the
    cross-example (common) term."""
    w = [16, 32, 32, 1]
    one = predict_mlp(w, "sigmoid", batch_size=1, loss="binary_cross_entropy")
    assert one.batch_grad_norm_by_depth == pytest.approx(one.independent_grad_norm_by_depth)
    big = predict_mlp(w, "sigmoid", batch_size=256, loss="bce")
    assert big.batch_grad_norm_by_depth is not None
    assert big.batch_grad_norm_by_depth[0] < one.batch_grad_norm_by_depth[0]
