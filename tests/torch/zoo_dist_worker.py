"""One rank of a distributed zoo setup: ``python zoo_dist_worker.py SETUP OUT_DIR``.

Reads RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT from the environment (gloo on 127.0.0.1),
trains a small MLP a few steps under DDP, FSDP1 (original or flat parameters) or FSDP2, watched
by gradprobe with ``log_dir=OUT_DIR/log`` and ``all_ranks=True``, and writes
``OUT_DIR/rank<r>.json``: per step, the reference norm of every parameter's *global* gradient
taken in the same step (``p.grad`` for DDP, ``full_tensor()`` for DTensor, the full gradients
summoned for FSDP1 with original parameters, an unsharded replica for flat parameters), and the
rows the monitor recorded.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import gradprobe

STEPS = 3


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)
    )


def batch(step: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 * step + rank)
    return torch.randn(16, 8, generator=g), torch.randn(16, 3, generator=g)


def global_batch(step: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(batch(step, r) for r in range(world)), strict=True)
    return torch.cat(xs), torch.cat(ys)


def key(name: str) -> str:
    for prefix in ("module.", "_fsdp_wrapped_module.", "_checkpoint_wrapped_module."):
        name = name.replace(prefix, "")
    layer, _, pname = name.rpartition(".")
    return f"{layer or '(root)'}/{pname}"


def fake_budget(rank: int) -> Any:
    """The default budget on a clock that makes each rank see other costs: rank 0 finds
    everything cheap, rank 1 dear. Without agreeing, they would record different steps (and
    the sharded setups' collectives would hang)."""
    from gradprobe.budget import Budget, Tier

    t = [0.0]
    cost = {Tier.NONE: 1.0, Tier.GRADIENTS: 1.01 + 0.1 * rank, Tier.ALL: 1.03 + 0.5 * rank}
    budget = Budget(0.05, clock=lambda: t[0], window=8, decide_every=8)

    def tick(step: int) -> None:
        t[0] += cost[budget.tier(step)]

    budget.tick = tick  # type: ignore[attr-defined]
    return budget


def main(setup: str, out: Path) -> None:
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    setup, _, variant = setup.partition("+")
    steps = STEPS if variant != "budget" else 60
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = mlp()
    replica = None
    if setup == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        wrapped = DDP(model)
    elif setup in ("fsdp1_orig", "fsdp1_flat"):
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        if setup == "fsdp1_flat":
            replica = mlp()
        wrapped = FSDP(model, use_orig_params=setup == "fsdp1_orig", device_id=torch.device("cpu"))
    elif setup == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer)
        wrapped = fully_shard(model)
    else:
        raise SystemExit(f"unknown setup {setup}")
    opt = torch.optim.SGD(wrapped.parameters(), lr=0.1)
    replica_opt = torch.optim.SGD(replica.parameters(), lr=0.1) if replica is not None else None
    budget = fake_budget(rank) if variant == "budget" else 0.05
    mon = gradprobe.watch(wrapped, opt, log_dir=out / "log", all_ranks=True, budget=budget)
    refs = []
    for step in range(steps):
        if variant == "budget":
            budget.tick(step)
        x, y = batch(step, rank)
        opt.zero_grad()
        F.mse_loss(wrapped(x), y).backward()
        refs.append(reference(setup, wrapped, replica, step, world))
        opt.step()
        if replica_opt is not None:
            replica_opt.step()
    mon.detach()
    rows = mon.to_pandas()
    recorded = [
        {f"{r.layer}/{r.param}": r.grad_norm for r in rows[rows["step"] == s].itertuples()}
        for s in range(steps)
    ]
    tiers = {int(s): t for s, t in rows.groupby("step")["tier"].first().items()}
    layer_steps = sorted(int(s) for s in set(mon.to_pandas("layers")["step"]))
    (out / f"rank{rank}.json").write_text(
        json.dumps({"refs": refs, "recorded": recorded, "tiers": tiers, "layers": layer_steps})
    )
    dist.barrier()
    dist.destroy_process_group()


def reference(setup: str, wrapped: nn.Module, replica: nn.Module | None, step: int, world: int):
    if setup == "ddp":
        return {key(n): float(p.grad.double().norm()) for n, p in wrapped.named_parameters()}
    if setup == "fsdp2":
        return {
            key(n): float(p.grad.full_tensor().double().norm())
            for n, p in wrapped.named_parameters()
        }
    if setup == "fsdp1_orig":
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        with FSDP.summon_full_params(wrapped, with_grads=True):
            return {key(n): float(p.grad.double().norm()) for n, p in wrapped.named_parameters()}
    # flat parameters: an unsharded replica on the whole global batch (the mean over ranks)
    assert replica is not None
    x, y = global_batch(step, world)
    replica.zero_grad()
    F.mse_loss(replica(x), y).backward()
    return {key(n): float(p.grad.double().norm()) for n, p in replica.named_parameters()}


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
