"""gradprobe.torch._dist: where each parameter's numbers live, and their exact global merge."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gradprobe.errors import UsageError
from gradprobe.torch._dist import ParamLayout, layout


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))


def _trainable(model: nn.Module) -> list[tuple[str, str, torch.Tensor]]:
    out = []
    for path, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            out.append((path or "(root)", name, p))
    return out


def test_plain_model_layout_is_trivial_one_piece_per_parameter() -> None:
    model = _mlp()
    lay = layout(model, _trainable(model))
    assert isinstance(lay, ParamLayout)
    assert lay.trivial and not lay.distributed and lay.rank == 0
    assert lay.entries == [
        ("0", "weight", 12),
        ("0", "bias", 4),
        ("2", "weight", 4),
        ("2", "bias", 1),
    ]
    assert [p is q for p, q in zip(lay.params, model.parameters(), strict=True)] == [True] * 4
    assert lay.local_grads() is None


def test_plain_model_reads_plain_tensors_and_merge_is_identity() -> None:
    model = _mlp()
    lay = layout(model, _trainable(model))
    model(torch.randn(5, 3)).pow(2).sum().backward()
    grads = lay.local_grads()
    assert grads is not None and lay.grad_present is not None and lay.grad_present.all()
    for g, p in zip(grads, model.parameters(), strict=True):
        assert type(g) is torch.Tensor and g.data_ptr() == p.grad.data_ptr()
    weights = lay.local_weights()
    for w, p in zip(weights, model.parameters(), strict=True):
        assert type(w) is torch.Tensor and w.data_ptr() == p.data_ptr()
    rows = np.array([[g.double().square().sum().item(), g.abs().max().item()] for g in grads])
    assert lay.merge(rows, "sm") is rows or np.array_equal(lay.merge(rows, "sm"), rows)


def test_parameter_without_gradient_reads_as_zeros_and_is_flagged() -> None:
    model = _mlp()
    lay = layout(model, _trainable(model))
    model[2].bias.requires_grad_(False)
    model(torch.randn(5, 3)).sum().backward()
    grads = lay.local_grads()
    assert grads is not None and lay.grad_present is not None
    assert lay.grad_present.tolist() == [True, True, True, False]
    assert grads[3].shape == (1,) and float(grads[3].abs().sum()) == 0.0


def test_merge_rejects_rows_of_the_wrong_shape_or_ops() -> None:
    model = _mlp()
    lay = layout(model, _trainable(model))
    with pytest.raises(UsageError, match="expected per-piece rows of shape"):
        lay.merge(np.zeros((3, 1)), "s")
    with pytest.raises(UsageError, match="expected ops"):
        lay.merge(np.zeros((4, 1)), "x")
