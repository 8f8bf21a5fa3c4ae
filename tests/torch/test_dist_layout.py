"""gradprobe.torch._dist: where each parameter's numbers live, and their exact global merge."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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


# ------------------------------------------------------- 2 (and 1) gloo processes on 127.0.0.1
WORKER = Path(__file__).with_name("dist_workers.py")
TIMEOUT = 150.0  # seconds for one run of every case (imports alone take seconds on a busy CI)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch(world: int, out: Path) -> list[tuple[subprocess.Popen[bytes], Path, Path]]:
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    procs = []
    for rank in range(world):
        result, log = out / f"w{world}r{rank}.json", out / f"w{world}r{rank}.log"
        cmd = [sys.executable, str(WORKER), str(rank), str(world), str(port), str(result)]
        with log.open("wb") as f:
            procs.append((subprocess.Popen(cmd, env=env, stdout=f, stderr=f), result, log))
    return procs


def _collect(procs: list[tuple[subprocess.Popen[bytes], Path, Path]], deadline: float) -> list[Any]:
    out = []
    for proc, result, log in procs:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            for p, _, _ in procs:
                p.kill()
                p.wait()
            tail = log.read_text()[-3000:]
            pytest.fail(f"distributed worker timed out after {TIMEOUT:.0f} s; log:\n{tail}")
        if proc.returncode != 0:
            pytest.fail(
                f"distributed worker exit {proc.returncode}; log:\n{log.read_text()[-3000:]}"
            )
        out.append(json.loads(result.read_text()))
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[Any]]:
    """Every case of dist_workers.py on 2 ranks and on 1 rank (both launched at once)."""
    out = tmp_path_factory.mktemp("dist")
    two, one = _launch(2, out), _launch(1, out)
    deadline = time.monotonic() + TIMEOUT
    return {2: _collect(two, deadline), 1: _collect(one, deadline)}


def _worst(case: dict[str, Any], reference: dict[str, Any]) -> float:
    """Largest relative error of the layout's numbers against the reference's, any step."""
    worst = 0.0
    for step, ref_step in zip(case["steps"], reference["steps"], strict=True):
        for kind in ("grad", "weight"):
            got, ref = step[kind], ref_step[f"ref_{kind}"]
            assert sorted(got) == sorted(ref), kind
            for name, values in ref.items():
                for a, b in zip(got[name], values, strict=True):
                    worst = max(worst, abs(a - b) / abs(b))
    return worst


MLP_ENTRIES = [
    ["0", "weight", 35],
    ["0", "bias", 7],
    ["2", "weight", 21],
    ["2", "bias", 3],
    ["4", "weight", 3],
    ["4", "bias", 1],
]


CASES = [
    "ddp",
    "fsdp1_flat",
    "fsdp1_orig",
    "fsdp1_replicated",
    "fsdp1_hybrid",
    "fsdp2",
    "fsdp2_hybrid",
]


@pytest.mark.slow  # one shared launch of 3 processes: 20-35 s on 2 busy cores
@pytest.mark.parametrize("world", [2, 1])
@pytest.mark.parametrize("case", CASES)
def test_global_norms_match_the_full_gradient_and_weights(
    runs: dict[int, list[Any]], world: int, case: str
) -> None:
    ranks = [r[case] for r in runs[world]]
    for r in ranks:
        assert r["entries"] == MLP_ENTRIES  # one row per original parameter, clean names
        assert r["distributed"]
        # FSDP1 hybrid sharding with shards of one rank leaves the replicas' gradients
        # unsynchronised (torch 2.13): the numbers are the first replica's.
        reference = ranks[0] if case == "fsdp1_hybrid" else r
        assert _worst(r, reference) < 1e-10
        assert all(step["applied"] for step in r["steps"])  # read what the optimizer applies
        assert r["no_grad_after_zero_grad"]
    for r in ranks[1:]:  # every rank holds the same merged numbers
        for step, first in zip(r["steps"], ranks[0]["steps"], strict=True):
            assert (step["grad"], step["weight"]) == (first["grad"], first["weight"])


@pytest.mark.slow  # one shared launch of 3 processes: 20-35 s on 2 busy cores
def test_ddp_layout_is_trivial_on_every_rank(runs: dict[int, list[Any]]) -> None:
    assert all(r["ddp"]["trivial"] and r["ddp"]["n_pieces"] == 6 for r in runs[2])


@pytest.mark.slow  # one shared launch of 3 processes: 20-35 s on 2 busy cores
def test_sharded_layouts_split_pieces_between_ranks(runs: dict[int, list[Any]]) -> None:
    for case in ("fsdp1_flat", "fsdp1_orig", "fsdp2"):
        pieces = [r[case]["n_pieces"] for r in runs[2]]
        assert not any(r[case]["trivial"] for r in runs[2])
        assert 6 <= sum(pieces) <= 12 and min(pieces) < 6, (case, pieces)
    for case in ("fsdp1_replicated", "fsdp1_hybrid", "fsdp2_hybrid"):  # replicas count once
        assert [r[case]["n_pieces"] for r in runs[2]] == [6, 0], case
    assert [r["fsdp1_flat"]["n_params"] for r in runs[2]] == [2, 2]  # the flat parameters
    assert [r["fsdp1_orig"]["n_params"] for r in runs[2]] == [6, 6]  # the original ones


@pytest.mark.slow  # one shared launch of 3 processes: 20-35 s on 2 busy cores
def test_merge_adds_and_maxes_over_ranks_with_empty_entries_and_nan(
    runs: dict[int, list[Any]],
) -> None:
    for r in runs[2]:
        merged = np.array(r["merge"]["merged"])
        assert merged[:, 0].tolist() == [13.0, 0.0, 4.5]
        assert merged[0, 1] == 7.0 and merged[1, 1] == -np.inf and np.isnan(merged[2, 1])
    merged = np.array(runs[1][0]["merge"]["merged"])
    assert merged[:, 0].tolist() == [3.0, 0.0, 4.0]


def test_weights_follow_a_parameter_whose_data_was_replaced() -> None:
    model = _mlp()
    lay = layout(model, _trainable(model))
    first = lay.local_weights()
    with torch.no_grad():
        model[0].weight.data = torch.full((4, 3), 2.0)  # e.g. model.to(...) or a reload
    again = lay.local_weights()
    assert again[0].data_ptr() == model[0].weight.data_ptr() != first[0].data_ptr()
    assert float(again[0].sum()) == 24.0
    assert again[1].data_ptr() == first[1].data_ptr()  # the others are the same views


def test_sparse_gradient_is_read_dense() -> None:
    emb = nn.Embedding(10, 3, sparse=True)
    lay = layout(emb, [("(root)", "weight", emb.weight)])
    emb(torch.tensor([1, 1, 4])).sum().backward()
    grads = lay.local_grads()
    assert grads is not None and grads[0].layout == torch.strided
    assert torch.equal(grads[0], emb.weight.grad.to_dense())
