"""gradprobe.torch.predict reads a real MLP: widths, activations, variances, inputs."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from gradprobe.errors import UsageError  # noqa: E402
from gradprobe.theory import predict_mlp  # noqa: E402
from gradprobe.torch.predict import predict  # noqa: E402


def _mlp(act: type[nn.Module], widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


@pytest.mark.parametrize(
    ("act", "name"), [(nn.Sigmoid, "sigmoid"), (nn.Tanh, "tanh"), (nn.ReLU, "relu")]
)
def test_reads_widths_activations_and_default_variances(act: type[nn.Module], name: str) -> None:
    torch.manual_seed(0)
    widths = [32, 256, 256, 128, 10]
    p = predict(_mlp(act, widths))
    assert p.widths == tuple(widths)
    assert [lay.activation for lay in p.layers] == [name] * 3 + ["linear"]
    for lay in p.layers:  # torch default: Var(W) = Var(b) = 1/(3 fan_in)
        assert lay.weight_var == pytest.approx(1 / (3 * lay.fan_in), rel=0.1)
        assert lay.bias_var == pytest.approx(1 / (3 * lay.fan_in), rel=0.35)
    expected = predict_mlp(widths, name, "torch_default").first_to_last
    assert p.first_to_last == pytest.approx(expected, rel=0.3)


def test_reads_custom_init_and_input_second_moment() -> None:
    torch.manual_seed(1)
    net = _mlp(nn.Tanh, [16, 512, 512, 1])
    for lin in net:
        if isinstance(lin, nn.Linear):
            nn.init.normal_(lin.weight, std=(2.0 / lin.in_features) ** 0.5)
            nn.init.zeros_(lin.bias)
    x = 3.0 * torch.randn(4096, 16)
    p = predict(net, x, batch_size=64)
    assert [lay.sigma_w2 for lay in p.layers] == pytest.approx([2.0] * 3, rel=0.1)
    assert [lay.bias_var for lay in p.layers] == [0.0] * 3
    assert p.input_second_moment == pytest.approx(9.0, rel=0.05)
    assert p.batch_grad_norm_by_depth is not None


class _Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 32), nn.Linear(32, 1)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.b(torch.tanh(self.a(x)))


def test_functional_activation_needs_the_argument() -> None:
    with pytest.raises(UsageError, match="activation='tanh'"):
        predict(_Functional())
    assert predict(_Functional(), activation="tanh").layers[0].activation == "tanh"


def test_not_an_mlp() -> None:
    with pytest.raises(UsageError, match="at least 2 nn.Linear"):
        predict(nn.Sequential(nn.Linear(4, 2)))
    with pytest.raises(UsageError, match="features"):
        predict(_mlp(nn.ReLU, [4, 8, 1]), torch.randn(3, 5))
