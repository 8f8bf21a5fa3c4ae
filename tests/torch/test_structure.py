"""gradprobe.torch._structure and the activation table on real models: what a module outputs,
which activation it computes, what is a convolution, which layers own which parameters."""

from __future__ import annotations

import json
import math
import os
import socket

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations, parametrize
from torch.nn.utils.rnn import pack_padded_sequence
from torch.overrides import TorchFunctionMode

from gradprobe.torch._activations import FUNCTIONS, MODULES, Activation, of_call
from gradprobe.torch._structure import (
    ROOT,
    activation_of,
    clean_path,
    is_convolution,
    kind,
    primary_tensor,
    trainable,
    unwrap,
)

transformers = pytest.importorskip("transformers")
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel  # noqa: E402
from transformers import activations as hf_act  # noqa: E402
from transformers.pytorch_utils import Conv1D  # noqa: E402


def _gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=32)
    cfg.bos_token_id = cfg.eos_token_id = 0
    return GPT2LMHeadModel(cfg)


def _bert() -> BertModel:
    torch.manual_seed(0)
    cfg = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=100,
        max_position_embeddings=32,
    )
    return BertModel(cfg)


def _outputs(model: nn.Module, *args, **kwargs) -> dict[str, object]:
    """Every module's raw output in one forward, by path."""
    seen: dict[str, object] = {}
    handles = [
        m.register_forward_hook(lambda mod, i, o, n=n: seen.setdefault(n, o))
        for n, m in model.named_modules()
    ]
    try:
        seen["<return>"] = model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return seen


# ----------------------------------------------------------------------------- primary_tensor
def test_primary_tensor_of_plain_and_non_floating_outputs():
    x = torch.randn(3, 4)
    assert primary_tensor(x) is x
    assert primary_tensor(torch.arange(3)) is None
    assert primary_tensor(None) is None
    assert primary_tensor("text") is None
    assert primary_tensor((None, torch.arange(2), [x])) is x  # depth first, floating only
    assert primary_tensor({"ids": torch.arange(2), "h": x}) is x


def test_primary_tensor_prefers_a_tensor_over_a_0d_loss():
    loss, logits = torch.tensor(1.5), torch.randn(2, 3)
    assert primary_tensor({"loss": loss, "logits": logits}) is logits
    assert primary_tensor((loss,)) is loss  # only a scalar: the scalar


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU, nn.RNN])
def test_recurrent_layers_output_their_sequence_not_the_hidden_state(cell):
    rnn = cell(3, 5, batch_first=True)
    out = rnn(torch.randn(2, 7, 3))
    assert isinstance(out, tuple)
    assert primary_tensor(out) is out[0]
    assert primary_tensor(out).shape == (2, 7, 5)


def test_packed_sequence_output_is_its_data():
    lstm = nn.LSTM(3, 5, batch_first=True)
    packed = pack_padded_sequence(torch.randn(2, 7, 3), torch.tensor([7, 4]), batch_first=True)
    out = lstm(packed)
    assert primary_tensor(out) is out[0].data
    assert primary_tensor(out).shape == (11, 5)


@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_attention_outputs_its_attention_not_the_weights(need_weights):
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(2, 5, 8)
    out = mha(x, x, x, need_weights=need_weights)
    assert primary_tensor(out) is out[0]
    assert primary_tensor(out).shape == (2, 5, 8)


def test_transformer_encoder_layer_outputs_a_tensor():
    layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
    out = _outputs(layer, torch.randn(2, 5, 8))
    assert primary_tensor(out[""]) is out[""]
    assert primary_tensor(out["self_attn"]) is out["self_attn"][0]  # type: ignore[index]


def test_gpt2_blocks_attention_and_model_outputs():
    model = _gpt2()
    ids = torch.randint(0, 100, (2, 8))
    out = _outputs(model, ids, labels=ids)
    for path in ("transformer.h.0", "transformer.h.0.attn", "transformer.h.1.mlp"):
        t = primary_tensor(out[path])
        assert t is not None and t.shape == (2, 8, 32), path
    attn = out["transformer.h.0.attn"]
    assert isinstance(attn, tuple) and primary_tensor(attn) is attn[0]
    # the model's ModelOutput: last_hidden_state; the LM head's: logits, not the 0-d loss
    assert primary_tensor(out["transformer"]) is out["transformer"].last_hidden_state  # type: ignore[attr-defined]
    ret = out["<return>"]
    assert primary_tensor(ret) is ret.logits  # type: ignore[attr-defined]


def test_bert_layers_and_model_outputs():
    model = _bert()
    out = _outputs(model, torch.randint(0, 100, (2, 6)))
    for path in ("encoder.layer.0", "encoder.layer.0.attention", "encoder.layer.1.output"):
        t = primary_tensor(out[path])
        assert t is not None and t.shape == (2, 6, 32), path
    ret = out["<return>"]
    assert primary_tensor(ret) is ret.last_hidden_state  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------ activations
def test_every_torch_activation_module_is_known_with_its_family():
    for cls, act in MODULES.items():
        assert isinstance(act, Activation)
        assert act.family in ("saturating", "rectifier")
        assert activation_of(cls()) == act or cls is nn.Hardtanh
    assert activation_of(nn.GELU()).family == activation_of(nn.SiLU()).family == "rectifier"
    assert activation_of(nn.Linear(2, 2)) is None
    assert activation_of(nn.Softmax(dim=-1)) is None
    assert activation_of(nn.Identity()) is None


def test_relu6_is_a_rectifier_though_it_subclasses_hardtanh():
    assert issubclass(nn.ReLU6, nn.Hardtanh)
    act = activation_of(nn.ReLU6())
    assert act is not None and (act.name, act.family, act.nonneg) == ("relu6", "rectifier", True)


def test_gelu_tanh_approximation_is_named_gelu_tanh_not_tanh():
    assert activation_of(nn.GELU()).name == "gelu"  # type: ignore[union-attr]
    act = activation_of(nn.GELU(approximate="tanh"))
    assert act is not None and (act.name, act.family) == ("gelu_tanh", "rectifier")


def test_hardtanh_saturates_at_its_own_bounds():
    act = activation_of(nn.Hardtanh(-2.0, 3.0))
    assert act is not None and act.family == "saturating"
    assert -2.0 < act.low < -1.99999 and 2.99999 < act.high < 3.0


# name, family and the function each HF activation must compute
HF_EXPECTED = {
    "gelu": ("gelu", lambda x: F.gelu(x)),
    "gelu_python": ("gelu", lambda x: F.gelu(x)),
    "gelu_new": ("gelu_new", lambda x: F.gelu(x, approximate="tanh")),
    "gelu_pytorch_tanh": ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh")),
    "gelu_python_tanh": ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh")),
    "gelu_fast": ("gelu_fast", lambda x: F.gelu(x, approximate="tanh")),
    "gelu_accurate": ("gelu_accurate", lambda x: F.gelu(x, approximate="tanh")),
    "gelu_10": ("gelu_clipped", lambda x: F.gelu(x).clamp(-10, 10)),
    "quick_gelu": ("quick_gelu", lambda x: x * torch.sigmoid(1.702 * x)),
    "silu": ("silu", F.silu),
    "swish": ("silu", F.silu),
    "mish": ("mish", F.mish),
    "relu2": ("relu2", lambda x: F.relu(x) ** 2),
    "relu": ("relu", F.relu),
    "relu6": ("relu6", F.relu6),
    "leaky_relu": ("leaky_relu", F.leaky_relu),
    "hardswish": ("hardswish", F.hardswish),
    "sigmoid": ("sigmoid", torch.sigmoid),
    "tanh": ("tanh", torch.tanh),
}


@pytest.mark.parametrize("key", sorted(HF_EXPECTED))
def test_hugging_face_activations_are_named_by_what_computes_them(key):
    module = hf_act.ACT2FN[key]
    name, reference = HF_EXPECTED[key]
    act = activation_of(module)
    assert act is not None and act.name == name
    x = torch.linspace(-12, 12, 2001, dtype=torch.float64)
    torch.testing.assert_close(module(x), reference(x), atol=2e-3, rtol=1e-3)
    if name.startswith(("gelu", "quick_gelu")):  # consistent with nn.GELU: dead-unit statistic
        assert act.family == "rectifier" and not act.nonneg


def test_hf_gelu_new_is_not_labelled_tanh():
    """Regression: GPT-2's NewGELUActivation was labelled by the tanh inside it."""
    act = activation_of(hf_act.NewGELUActivation())
    assert act is not None and act.name == "gelu_new" and act.family == "rectifier"


def test_hf_linear_activation_is_no_activation_and_laplace_saturates():
    assert activation_of(hf_act.LinearActivation()) is None
    act = activation_of(hf_act.LaplaceActivation())
    assert act is not None and act.family == "saturating"


def test_activation_classes_are_matched_by_name_without_transformers():
    """Remote-code models carry their own copies of HF's activation classes."""

    class NewGELUActivation(nn.Module):
        def forward(self, x):
            return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))

    class PytorchGELUTanh(nn.Module):
        def forward(self, x):
            return F.gelu(x, approximate="tanh")

    assert activation_of(NewGELUActivation()).name == "gelu_new"  # type: ignore[union-attr]
    assert activation_of(PytorchGELUTanh()).name == "gelu_tanh"  # type: ignore[union-attr]


def test_subclasses_inherit_the_activation_only_with_its_forward():
    class MyReLU(nn.ReLU):
        pass

    class Shifted(nn.ReLU):
        def forward(self, x):
            return super().forward(x) - 1

    class MyGELU(hf_act.GELUActivation):
        pass

    assert activation_of(MyReLU()) == MODULES[nn.ReLU]
    assert activation_of(Shifted()) is None
    assert activation_of(MyGELU()).name == "gelu"  # type: ignore[union-attr]


def _saturated_by_derivative(fn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    y = fn(x)
    (d,) = torch.autograd.grad(y.sum(), x)
    return y.detach(), d.abs() < 0.01 * d.abs().max()


@pytest.mark.parametrize(
    "module",
    [nn.Sigmoid(), nn.Tanh(), nn.Softsign(), nn.Hardtanh(), nn.Hardtanh(-2, 3), nn.Hardsigmoid()],
    ids=lambda m: repr(m),
)
def test_saturation_band_is_where_the_derivative_is_under_one_percent(module):
    """The band read from the output agrees with the derivative, element by element."""
    act = activation_of(module)
    assert act is not None and act.family == "saturating"
    x = torch.linspace(-40, 40, 160_001, dtype=torch.float64)
    y, slow = _saturated_by_derivative(module, x)
    band = (y < act.low) | (y > act.high)
    disagree = (band != slow).sum().item()
    assert disagree <= 4, (act, disagree)  # only where the threshold falls between grid points
    assert slow.any() and (~slow).any()


def test_laplace_band_matches_its_derivative():
    module = hf_act.LaplaceActivation()
    act = activation_of(module)
    x = torch.linspace(-3, 4, 70_001, dtype=torch.float64)
    y, slow = _saturated_by_derivative(module, x)
    assert ((y < act.low) | (y > act.high) != slow).sum().item() <= 4  # type: ignore[union-attr]


class _Calls(TorchFunctionMode):
    """What a torch-function mode sees: the (func, args, kwargs) of each call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[object, tuple, dict]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls.append((func, args, kwargs or {}))
        return func(*args, **(kwargs or {}))


FUNCTIONAL = [
    ("F.relu", lambda x: F.relu(x), "relu"),
    ("F.relu inplace", lambda x: F.relu(x, inplace=True), "relu"),
    ("x.relu_()", lambda x: x.relu_(), "relu"),
    ("torch.relu_", lambda x: torch.relu_(x), "relu"),
    ("x.sigmoid()", lambda x: x.sigmoid(), "sigmoid"),
    ("x.sigmoid_()", lambda x: x.sigmoid_(), "sigmoid"),
    ("torch.special.expit", lambda x: torch.special.expit(x), "sigmoid"),
    ("x.tanh_()", lambda x: x.tanh_(), "tanh"),
    ("F.gelu", lambda x: F.gelu(x), "gelu"),
    ("F.gelu tanh", lambda x: F.gelu(x, approximate="tanh"), "gelu_tanh"),
    ("F.silu", lambda x: F.silu(x), "silu"),
    ("F.mish", lambda x: F.mish(x), "mish"),
    ("F.hardswish", lambda x: F.hardswish(x), "hardswish"),
    ("F.hardsigmoid", lambda x: F.hardsigmoid(x), "hardsigmoid"),
    ("F.hardtanh", lambda x: F.hardtanh(x), "hardtanh"),
    ("F.softsign", lambda x: F.softsign(x), "softsign"),
    ("F.leaky_relu_", lambda x: F.leaky_relu_(x), "leaky_relu"),
    ("F.elu_", lambda x: F.elu_(x), "elu"),
    ("F.softplus", lambda x: F.softplus(x), "softplus"),
]


@pytest.mark.parametrize("label,call,name", FUNCTIONAL, ids=[f[0] for f in FUNCTIONAL])
def test_functional_activations_are_recognised_as_a_mode_sees_them(label, call, name):
    mode = _Calls()
    with mode:
        call(torch.randn(3, 4))
    found = [of_call(f, a, k) for f, a, k in mode.calls]
    assert [a.name for a in found if a is not None] == [name]


def test_functional_hardtanh_reads_its_bounds():
    mode, x = _Calls(), torch.randn(3)
    with mode:
        F.hardtanh(x, -2.0, max_val=2.0)
    ((func, args, kwargs),) = mode.calls
    act = of_call(func, args, kwargs)
    assert act is not None and -2 < act.low < -1.9999 and 1.9999 < act.high < 2
    assert FUNCTIONS[F.hardtanh].high < 1


def test_activation_inside_gelu_is_never_seen_outside_the_module():
    """The tanh inside NewGELUActivation: a monitor ignores functional calls inside a module
    that activation_of recognises, so the module itself must be recognised."""
    mode = _Calls()
    module = hf_act.NewGELUActivation()
    with mode:
        module(torch.randn(4))
    assert any(of_call(f, a, k) == FUNCTIONS[torch.tanh] for f, a, k in mode.calls)
    assert activation_of(module) is not None


# ----------------------------------------------------------------------------- convolutions
def test_only_torch_conv_layers_are_convolutions():
    for m in (
        nn.Conv1d(2, 3, 3),
        nn.Conv2d(2, 3, 3),
        nn.Conv3d(2, 3, 3),
        nn.ConvTranspose2d(2, 3, 3),
        nn.LazyConv2d(3, 3),
        parametrizations.weight_norm(nn.Conv2d(2, 3, 3)),
    ):
        assert is_convolution(m), m
    for m in (Conv1D(8, 4), nn.Linear(2, 3), nn.BatchNorm2d(3), nn.Embedding(4, 2)):
        assert not is_convolution(m), m


def test_hf_conv1d_is_a_linear_layer_with_units_on_the_last_dim():
    """Regression: HF's Conv1D was treated as a convolution (dead units counted over positions)."""
    layer = Conv1D(8, 4)  # nf=8 outputs, nx=4 inputs
    assert not is_convolution(layer)
    assert layer(torch.randn(2, 5, 4)).shape[-1] == 8


# ------------------------------------------------------------------------------- trainable
def _rows(model: nn.Module) -> list[tuple[str, str]]:
    return [(layer, pname) for layer, pname, _ in trainable(model)[0]]


def test_batchnorm_cnn_layers_in_order():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )
    assert _rows(model) == [
        ("0", "weight"),
        ("1", "weight"),
        ("1", "bias"),
        ("3", "weight"),
        ("3", "bias"),
        ("4", "weight"),
        ("4", "bias"),
        ("8", "weight"),
        ("8", "bias"),
    ]
    _, owners = trainable(model)
    assert list(owners.values()) == ["0", "1", "3", "4", "8"]
    assert [is_convolution(m) for m in owners] == [True, False, True, False, False]


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_encoder_layers_in_order(norm_first):
    enc = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(8, 2, 16, batch_first=True, norm_first=norm_first),
        num_layers=2,
        enable_nested_tensor=False,
    )
    params, owners = trainable(enc)
    layers = list(dict.fromkeys(layer for layer, _, _ in params))
    per_layer = [
        "self_attn",
        "self_attn.out_proj",
        "linear1",
        "linear2",
        "norm1",
        "norm2",
    ]
    assert layers == [f"layers.{i}.{p}" for i in range(2) for p in per_layer]
    assert ("layers.0.self_attn", "in_proj_weight") in [(a, b) for a, b, _ in params]
    assert list(owners.values()) == layers


def test_lstm_model_layers_and_its_root_parameters():
    lstm = nn.LSTM(3, 5, num_layers=2)
    assert {layer for layer, _ in _rows(lstm)} == {ROOT}
    assert [p for _, p in _rows(lstm)][:4] == [
        "weight_ih_l0",
        "weight_hh_l0",
        "bias_ih_l0",
        "bias_hh_l0",
    ]

    class Tagger(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 3)
            self.rnn = nn.LSTM(3, 5, batch_first=True)
            self.head = nn.Linear(5, 2)

        def forward(self, ids):
            return self.head(self.rnn(self.emb(ids))[0])

    params, owners = trainable(Tagger())
    assert list(owners.values()) == ["emb", "rnn", "head"]
    assert len(params) == 1 + 4 + 2


def test_gpt2_from_config_layer_paths_in_order():
    model = _gpt2()
    params, owners = trainable(model)
    block = ["ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"]
    expected = (
        ["transformer.wte", "transformer.wpe"]
        + [f"transformer.h.{i}.{p}" for i in range(2) for p in block]
        + ["transformer.ln_f"]
    )
    assert list(dict.fromkeys(layer for layer, _, _ in params)) == expected
    # the LM head's weight is the embedding's (tied): one row, under the embedding; the head
    # still owns it, so its forward and backward signal are watched
    assert model.lm_head.weight is model.transformer.wte.weight
    assert sum(p is model.lm_head.weight for _, _, p in params) == 1
    assert list(owners.values()) == expected + ["lm_head"]
    assert not any(is_convolution(m) for m in owners)  # HF Conv1D are linear layers
    assert [kind(m) for m in owners][2:5] == ["LayerNorm", "Conv1D", "Conv1D"]


def test_weight_norm_linear_reports_its_originals_under_the_layer():
    """Regression: parametrizations added ParametrizationList rows."""
    model = nn.Sequential(parametrizations.weight_norm(nn.Linear(3, 4)), nn.Tanh(), nn.Linear(4, 1))
    params, owners = trainable(model)
    assert [(a, b) for a, b, _ in params] == [
        ("0", "weight.original0"),
        ("0", "weight.original1"),
        ("0", "bias"),
        ("2", "weight"),
        ("2", "bias"),
    ]
    assert list(owners.values()) == ["0", "2"]
    assert kind(model[0]) == "Linear"
    assert not any(isinstance(m, parametrize.ParametrizationList) for m in owners)
    # the tensors listed are the ones that receive gradients
    model(torch.randn(5, 3)).sum().backward()
    assert all(p.grad is not None for _, _, p in params)
    assert params[0][2] is model[0].parametrizations.weight.original0


def test_single_original_parametrizations_are_named_like_the_tensor():
    model = nn.Sequential(
        parametrizations.orthogonal(nn.Linear(4, 4)),
        parametrizations.spectral_norm(nn.Linear(4, 2)),
    )
    assert _rows(model) == [("0", "weight"), ("0", "bias"), ("1", "weight"), ("1", "bias")]


def test_parametrizations_with_parameters_of_their_own():
    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.g = nn.Parameter(torch.ones(()))

        def forward(self, w):
            return w * self.g

    layer = nn.Linear(2, 2)
    parametrize.register_parametrization(layer, "weight", Scale())
    parametrize.register_parametrization(layer, "bias", Scale())
    params, owners = trainable(nn.Sequential(layer))
    assert [(a, b) for a, b, _ in params] == [
        ("0", "weight"),
        ("0", "weight.0.g"),
        ("0", "bias"),
        ("0", "bias.0.g"),
    ]
    assert list(owners.values()) == ["0"]  # owns no parameter directly, still the owner


def test_frozen_layers_are_owners_without_rows_and_shared_parameters_count_once():
    first, last = nn.Linear(3, 4), nn.Linear(4, 3)
    first.requires_grad_(False)
    shared = nn.Linear(3, 3)
    model = nn.Sequential(first, nn.ReLU(), last, shared, shared, nn.Linear(3, 0))
    params, owners = trainable(model)
    assert [(a, b) for a, b, _ in params] == [
        ("2", "weight"),
        ("2", "bias"),
        ("3", "weight"),
        ("3", "bias"),
    ]  # layer 5's parameters are empty: no rows
    assert list(owners.values()) == ["0", "2", "3", "5"]


def test_clean_path_removes_wrapper_segments_only():
    assert clean_path("_fsdp_wrapped_module.0._checkpoint_wrapped_module") == "0"
    assert clean_path("_orig_mod.encoder._orig_mod.layers.0") == "encoder.layers.0"
    assert clean_path("") == ROOT
    assert clean_path("_orig_mod") == ROOT
    assert clean_path("module.0") == "module.0"  # a user's child called module stays


def test_compiled_model_and_compiled_submodule_keep_the_users_paths():
    inner = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert _rows(torch.compile(inner)) == _rows(inner)  # OptimizedModule: not compiled until called
    model = nn.Sequential(nn.Linear(2, 2))
    model.block = torch.compile(nn.Sequential(nn.Linear(2, 2)))  # type: ignore[assignment]
    assert [a for a, _ in _rows(model)] == ["0", "0", "block.0", "block.0"]
    assert _rows(torch.compile(nn.Linear(2, 2))) == [(ROOT, "weight"), (ROOT, "bias")]


def test_checkpoint_wrapped_layers_keep_their_paths():
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), checkpoint_wrapper(nn.Linear(3, 1)))
    params, owners = trainable(model)
    assert [(a, b) for a, b, _ in params] == [
        ("0", "weight"),
        ("0", "bias"),
        ("2", "weight"),
        ("2", "bias"),
    ]
    assert [kind(m) for m in owners] == ["Linear", "Linear"]


class _UserWrapper(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.module = nn.Linear(2, 2)


@pytest.fixture
def gloo_group():
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_ddp_prefix_removed_only_for_a_ddp_model(gloo_group):
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), _UserWrapper())
    expected = [("0", "weight"), ("0", "bias"), ("2.module", "weight"), ("2.module", "bias")]
    ddp = nn.parallel.DistributedDataParallel(model)
    assert unwrap(ddp) is model
    assert _rows(model) == expected
    assert _rows(ddp) == expected
    assert _rows(torch.compile(ddp)) == expected
    assert trainable(ddp)[1] == trainable(model)[1]


def test_fsdp2_sharded_layers_keep_paths_and_kinds(gloo_group):
    from torch.distributed.fsdp import fully_shard

    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    fully_shard(model[0])
    fully_shard(model)
    params, owners = trainable(model)
    assert [(a, b, p.numel()) for a, b, p in params] == [
        ("0", "weight", 12),
        ("0", "bias", 4),
        ("2", "weight", 8),
        ("2", "bias", 2),
    ]
    assert [kind(m) for m in owners] == ["Linear", "Linear"]
    assert type(model[0]).__name__ == "FSDPLinear"


_FSDP1_RANKS = r"""
import json, os, sys, torch, torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

def run(rank, port, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from gradprobe.torch._structure import trainable
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    f = FSDP(model, use_orig_params=True, device_id=torch.device("cpu"))
    params, _ = trainable(f)
    rows = [[a, b, p.numel()] for a, b, p in params]
    with open(os.path.join(out, f"rows{rank}.json"), "w") as fh:  # one file per rank: the
        json.dump(rows, fh)  # ranks' prints to one pipe can interleave mid-line
    dist.destroy_process_group()

if __name__ == "__main__":
    mp.spawn(run, args=(int(sys.argv[1]), sys.argv[2]), nprocs=2)
"""


@pytest.mark.slow
def test_fsdp1_ranks_list_the_same_parameters_even_when_their_shard_is_empty(tmp_path):
    """Under FSDP1 (use_orig_params) a rank that holds no shard of a parameter sees it with
    numel 0; skipping it made the ranks disagree on the rows."""
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "fsdp1_ranks.py"
    script.write_text(_FSDP1_RANKS)
    done = subprocess.run(
        [sys.executable, str(script), str(port), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {r: json.loads((tmp_path / f"rows{r}.json").read_text()) for r in (0, 1)}
    names = {r: [(a, b) for a, b, _ in v] for r, v in rows.items()}
    assert names[0] == names[1] == [("0", "weight"), ("0", "bias"), ("2", "weight"), ("2", "bias")]
    assert any(n == 0 for _, _, n in rows[0] + rows[1])  # some rank does hold an empty shard
