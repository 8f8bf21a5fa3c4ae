"""One rank of the distributed layout tests (run by tests/torch/test_dist_layout.py).

``python dist_workers.py RANK WORLD PORT OUT.json``: joins a gloo group on 127.0.0.1, trains a
small MLP two steps under DDP, FSDP1 (flat and original parameters) and FSDP2 in turn, and
writes per case and step the per-entry numbers of :func:`gradprobe.torch._dist.layout` (read in
an optimizer step pre-hook, merged over the ranks) next to independent references taken in the
same step: ``p.grad`` (DDP), the full gradient gathered by hand or by
``summon_full_params(with_grads=True)`` (FSDP1), ``full_tensor()`` (FSDP2).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from gradprobe.torch._dist import ParamLayout, layout

CPU = torch.device("cpu")
Numbers = dict[str, list[float]]  # "layer.param" -> [sum of squares, max |x|]


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3), nn.Tanh(), nn.Linear(3, 1))


def batch(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randn(8, 5, generator=g), torch.randn(8, 1, generator=g)


def trainable(model: nn.Module) -> list[tuple[str, str, torch.Tensor]]:
    """What the monitor hands over: (layer path, name, tensor) of trainable parameters."""
    out = []
    for path, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if p.requires_grad and p.numel():
                out.append((path or "(root)", name, p))
    return out


def plain(path: str) -> str:
    drop = {"_fsdp_wrapped_module", "module", "_checkpoint_wrapped_module"}
    return ".".join(p for p in path.split(".") if p not in drop)


def numbers(t: torch.Tensor) -> list[float]:
    t = t.detach().double()
    return [float(t.square().sum()), float(t.abs().max())]


def merged(lay: ParamLayout, tensors: list[torch.Tensor] | None) -> Numbers:
    """Per-entry [sum of squares, max |x|] through the layout, as a monitor computes them."""
    assert tensors is not None
    for t in tensors:
        assert type(t) is torch.Tensor and t.layout == torch.strided and t.numel() > 0
    rows = np.array([numbers(t) for t in tensors]).reshape(len(tensors), 2)
    out = lay.merge(rows, "sm")
    names = [f"{layer}.{name}" for layer, name, _ in lay.entries]
    return {n: [float(v) for v in r] for n, r in zip(names, out, strict=True)}


def train(
    model: nn.Module,
    reference: Callable[[], tuple[Numbers, Numbers]],
) -> dict[str, Any]:
    """Two SGD steps; per step the layout's and the reference's numbers of grads and weights."""
    rank = dist.get_rank()
    lay = layout(model, trainable(model))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    seen: list[dict[str, Any]] = []

    def before(optimizer: Any, args: Any, kwargs: Any) -> None:
        grads = lay.local_grads()
        seen.append(
            {
                "grad": merged(lay, grads),
                "weight": merged(lay, lay.local_weights()),
                "applied": all(_inside(g, _optimizer_grads(optimizer)) for g in grads or []),
            }
        )

    opt.register_step_pre_hook(before)
    steps = []
    for step in range(2):
        x, y = batch(rank, step)
        nn.functional.mse_loss(model(x), y).backward()
        ref_grad, ref_weight = reference()
        opt.step()
        opt.zero_grad(set_to_none=True)
        steps.append({**seen[-1], "ref_grad": ref_grad, "ref_weight": ref_weight})
    return {
        "no_grad_after_zero_grad": lay.local_grads() is None,
        "entries": [list(e) for e in lay.entries],
        "trivial": lay.trivial,
        "distributed": lay.distributed,
        "n_params": len(lay.params),
        "n_pieces": lay.n_pieces,
        "steps": steps,
    }


def _optimizer_grads(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The local gradient tensors the optimizer's step applies."""
    out = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            g = p.grad
            if g is not None:
                out.append(g.to_local() if hasattr(g, "to_local") else g)
    return out


def _inside(t: torch.Tensor, grads: list[torch.Tensor]) -> bool:
    """Whether ``t`` views memory of one of ``grads`` (it is what the optimizer applies)."""
    lo = t.data_ptr()
    hi = lo + t.numel() * t.element_size()
    for g in grads:
        start = g.data_ptr()
        if start <= lo and hi <= start + g.numel() * g.element_size():
            return True
    return False


def case_ddp() -> dict[str, Any]:
    model = nn.parallel.DistributedDataParallel(mlp())

    def reference() -> tuple[Numbers, Numbers]:
        named = list(model.module.named_parameters())
        return (
            {n: numbers(p.grad) for n, p in named if p.grad is not None},
            {n: numbers(p) for n, p in named},
        )

    return train(model, reference)


def _fsdp1(use_orig_params: bool, **how: Any) -> nn.Module:
    """The MLP under FSDP1, its first layer in a nested FSDP module (two flat parameters)."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    inner = mlp()
    inner[0] = FSDP(inner[0], use_orig_params=use_orig_params, device_id=CPU, **how)
    return FSDP(inner, use_orig_params=use_orig_params, device_id=CPU, **how)


def case_fsdp1_orig(**how: Any) -> dict[str, Any]:
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    model = _fsdp1(True, **how)

    def reference() -> tuple[Numbers, Numbers]:
        with FSDP.summon_full_params(model, with_grads=True):
            named = [(plain(n), p) for n, p in model.named_parameters()]
            return (
                {n: numbers(p.grad) for n, p in named if p.grad is not None},
                {n: numbers(p) for n, p in named},
            )

    return train(model, reference)


def case_fsdp1_flat() -> dict[str, Any]:
    """Flat parameters: the full gradient is the ranks' shards gathered and concatenated, cut
    into the original shapes in module order (an unwrapped twin gives names and shapes)."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    model = _fsdp1(False)
    twin = mlp()
    root, nested = ["2.weight", "2.bias", "4.weight", "4.bias"], ["0.weight", "0.bias"]
    shapes = {n: p.shape for n, p in twin.named_parameters()}

    def full(flat: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, flat.detach().contiguous())
        return torch.cat(parts)

    def reference() -> tuple[Numbers, Numbers]:
        grads: Numbers = {}
        weights: Numbers = {}
        for m in FSDP.fsdp_modules(model):
            flat = m._handle.flat_param
            g, w = full(flat.grad), full(flat.data)
            at = 0
            for n in root if m is model else nested:
                k = shapes[n].numel()
                grads[n], weights[n] = numbers(g[at : at + k]), numbers(w[at : at + k])
                at += k
        return grads, weights

    return train(model, reference)


def case_fsdp1_replicated() -> dict[str, Any]:
    """NO_SHARD: every rank holds all of every parameter (counted once)."""
    from torch.distributed.fsdp import ShardingStrategy

    return case_fsdp1_orig(sharding_strategy=ShardingStrategy.NO_SHARD)


def case_fsdp1_hybrid() -> dict[str, Any]:
    """HYBRID_SHARD over a (replicas, shards) mesh of (world, 1): one full replica per rank."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import ShardingStrategy

    mesh = init_device_mesh("cpu", (dist.get_world_size(), 1))
    return case_fsdp1_orig(sharding_strategy=ShardingStrategy.HYBRID_SHARD, device_mesh=mesh)


def case_fsdp2(shape: tuple[int, ...] | None = None) -> dict[str, Any]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    model = mlp()
    names = ("replicate", "shard") if shape else None
    mesh = init_device_mesh("cpu", shape or (dist.get_world_size(),), mesh_dim_names=names)
    for i in (0, 2, 4):
        fully_shard(model[i], mesh=mesh)
    fully_shard(model, mesh=mesh)

    def reference() -> tuple[Numbers, Numbers]:
        named = list(model.named_parameters())
        return (
            {n: numbers(p.grad.full_tensor()) for n, p in named if p.grad is not None},
            {n: numbers(p.full_tensor()) for n, p in named},
        )

    return train(model, reference)


def case_merge() -> dict[str, Any]:
    """A hand-made layout: entry 1 has no piece anywhere, entry 2 a NaN maximum on rank 0."""
    from gradprobe.torch._dist import _Piece, _Source

    src = _Source(torch.zeros(1))
    mine = {
        0: ([0, 0, 2], [[1.0, 5.0], [2.0, 7.0], [4.0, float("nan")]]),
        1: ([0, 2], [[10.0, 1.0], [0.5, 3.0]]),
    }
    entry, rows = mine.get(dist.get_rank(), ([], []))
    lay = ParamLayout(
        [("a", "w", 3), ("b", "w", 1), ("c", "w", 2)],
        [],
        distributed=True,
        rank=dist.get_rank(),
        trivial=False,
        _pieces=[_Piece(e, src) for e in entry],
    )
    return {"merged": lay.merge(np.array(rows).reshape(len(rows), 2), "sm").tolist()}


def case_fsdp2_hybrid() -> dict[str, Any]:
    """HSDP: (Replicate, Shard(0)) placements over a (world, 1) mesh; replicas counted once."""
    return case_fsdp2((dist.get_world_size(), 1))


CASES = {
    "merge": case_merge,
    "ddp": case_ddp,
    "fsdp1_orig": case_fsdp1_orig,
    "fsdp1_flat": case_fsdp1_flat,
    "fsdp1_replicated": case_fsdp1_replicated,
    "fsdp1_hybrid": case_fsdp1_hybrid,
    "fsdp2": case_fsdp2,
    "fsdp2_hybrid": case_fsdp2_hybrid,
}


def main(rank: int, world: int, port: int, out: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    torch.set_num_threads(1)
    results = {}
    for name, run in CASES.items():
        start = time.perf_counter()
        results[name] = run()
        results[name]["seconds"] = time.perf_counter() - start
    dist.barrier()
    dist.destroy_process_group()
    with open(out, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
