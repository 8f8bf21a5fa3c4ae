"""The distributed zoo: global gradient norms under DDP, FSDP1 and FSDP2, two gloo ranks.

Each setup runs tests/torch/zoo_dist_worker.py as two processes on 127.0.0.1 (bounded in time),
then compares every recorded grad_norm with the reference each rank took in the same step, and
checks both ranks' rows reached the shared log_dir without colliding.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import gradprobe

WORKER = Path(__file__).with_name("zoo_dist_worker.py")
WORLD = 2
TIMEOUT = 120  # seconds for one setup's two processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(setup: str, out: Path) -> list[dict]:
    port = str(free_port())
    procs = []
    for rank in range(WORLD):
        env = dict(
            os.environ,
            RANK=str(rank),
            WORLD_SIZE=str(WORLD),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
            OMP_NUM_THREADS="1",
        )
        log = open(out / f"rank{rank}.log", "w")  # noqa: SIM115 -- closed below
        procs.append(
            (
                subprocess.Popen(
                    [sys.executable, str(WORKER), setup, str(out)], env=env, stdout=log, stderr=log
                ),
                log,
            )
        )
    try:
        for p, _ in procs:
            p.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        for p, _ in procs:
            p.kill()
        pytest.fail(f"{setup}: ranks did not finish in {TIMEOUT} s")
    finally:
        for _, log in procs:
            log.close()
    for rank, (p, _) in enumerate(procs):
        if p.returncode != 0:
            tail = (out / f"rank{rank}.log").read_text()[-3000:]
            pytest.fail(f"{setup}: rank {rank} exited {p.returncode}:\n{tail}")
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("setup", "tolerance"),
    [("ddp", 1e-10), ("fsdp1_orig", 1e-10), ("fsdp1_flat", 1e-5), ("fsdp2", 1e-10)],
)
def test_zoo_dist_global_grad_norms_on_every_rank(setup, tolerance, tmp_path):
    """The flat-parameter reference is an unsharded replica (float32 sums in another order)."""
    results = launch(setup, tmp_path)
    for rank, res in enumerate(results):
        assert len(res["recorded"]) == len(res["refs"]) == 3
        for step, (got, want) in enumerate(zip(res["recorded"], res["refs"], strict=True)):
            assert set(got) == set(want), (rank, step, sorted(got), sorted(want))
            for k, v in want.items():
                assert got[k] == pytest.approx(v, rel=tolerance), (rank, step, k)
    run = gradprobe.load_run(tmp_path / "log")
    params = run.to_pandas("params")
    assert sorted(params["rank"].unique()) == [0, 1]
    per_rank = params.groupby("rank").size()
    assert per_rank[0] == per_rank[1] == 3 * 6


@pytest.mark.slow
@pytest.mark.parametrize("setup", ["ddp+budget", "fsdp2+budget"])
def test_ranks_under_the_default_budget_record_the_same_steps(setup, tmp_path):
    """Each rank's clock finds other costs (tests/torch/zoo_dist_worker.py: fake_budget); the
    budget's plans go through one all_reduce (MIN of the shares), so both ranks record the same
    steps with the same statistics, and the sharded setup's collectives stay in step."""
    results = launch(setup, tmp_path)
    tiers = [res["tiers"] for res in results]
    assert tiers[0] == tiers[1]
    assert results[0]["layers"] == results[1]["layers"]
    assert "gradients" in tiers[0].values() or len(tiers[0]) < 60  # the plan did change
    assert len(results[0]["layers"]) < len(tiers[0])  # everything on a share of the steps
    for res in results:
        for step, (got, want) in enumerate(zip(res["recorded"], res["refs"], strict=True)):
            if str(step) in res["tiers"]:
                for k, v in want.items():
                    assert got[k] == pytest.approx(v, rel=1e-10), (step, k)
            else:
                assert got == {}
