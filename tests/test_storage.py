"""gradprobe.storage.Storage: nothing lost, one file set per rank, bounded memory; load_run and
the commands that take a run directory on a monitor's log_dir.

Rows are synthetic but shaped like the torch monitor's (torch/_rows.PendingRows: 64 steps per
``extend``), for the California model's 11 Linear layers: 22 parameter rows and 11 layer rows
a step. Every value is a known function of the step and the row (see :func:`param_chunk`).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import gradprobe
from gradprobe.cli import main
from gradprobe.errors import NoRunDirError, UsageError
from gradprobe.records import LAYER_STATS, PARAM_STATS, RecordBuffer, conform
from gradprobe.storage import Storage

HERE = Path(__file__).resolve().parent
N_LAYERS = 11
LAYERS = np.array([f"net.{2 * i}" for i in range(N_LAYERS)], dtype=object)
P_LAYER = np.repeat(LAYERS, 2)
P_NAME = np.tile(np.array(["weight", "bias"], dtype=object), N_LAYERS)
P_ROWS = len(P_LAYER)  # 22


def param_chunk(steps: np.ndarray) -> dict[str, np.ndarray]:
    """Parameter rows of ``steps``: ``grad_norm = step + i / 100`` for row ``i`` of a step."""
    k = len(steps)
    step = np.repeat(steps.astype(np.int64), P_ROWS)
    row = np.tile(np.arange(P_ROWS, dtype=np.float64), k)
    cols: dict[str, np.ndarray] = {
        "step": step,
        "layer": np.tile(P_LAYER, k),
        "param": np.tile(P_NAME, k),
        "depth": np.tile(np.repeat(np.arange(N_LAYERS, dtype=np.int64), 2), k),
        "numel": np.tile(np.array([4096, 64], dtype=np.int64), N_LAYERS * k),
    }
    for j, c in enumerate(PARAM_STATS):
        cols[c] = step + row / 100 + j
    cols["grad_nonfinite"] = np.zeros(k * P_ROWS)
    cols["update_ratio"] = 1e-3 * (1 + row) / (1 + step)
    cols["pe_grad_rms"] = np.full(k * P_ROWS, np.nan)
    return cols


def layer_chunk(steps: np.ndarray) -> dict[str, np.ndarray]:
    """Layer rows of ``steps``: ``backward_norm = step + j / 10 + 5`` for layer ``j``."""
    k = len(steps)
    step = np.repeat(steps.astype(np.int64), N_LAYERS)
    row = np.tile(np.arange(N_LAYERS, dtype=np.float64), k)
    cols: dict[str, np.ndarray] = {
        "step": step,
        "layer": np.tile(LAYERS, k),
        "depth": np.tile(np.arange(N_LAYERS, dtype=np.int64), k),
        "kind": np.full(k * N_LAYERS, "Linear", dtype=object),
        "activation": np.full(k * N_LAYERS, "sigmoid", dtype=object),
    }
    for j, c in enumerate(LAYER_STATS):
        cols[c] = step + row / 10 + j
    cols["saturated_frac"] = (row + 1) / (N_LAYERS + 1) + 0 * step
    cols["dead_frac"] = np.full(k * N_LAYERS, np.nan)  # sigmoid: not measured
    return cols


def feed(storage: Storage, steps: int, start: int = 0, per_extend: int = 64) -> None:
    """``steps`` recorded steps into the storage's buffers, ``per_extend`` steps at a time."""
    for s0 in range(start, start + steps, per_extend):
        chunk = np.arange(s0, min(s0 + per_extend, start + steps))
        storage.buffers["params"].extend(param_chunk(chunk))
        storage.buffers["layers"].extend(layer_chunk(chunk))


def on_disk(folder: Path, table: str = "params") -> pd.DataFrame:
    parts = sorted(folder.glob(f"{table}-*.parquet"))
    return pd.concat([pd.read_parquet(p) for p in parts]) if parts else pd.DataFrame()


def check_values(params: pd.DataFrame, steps: range) -> None:
    """Every row of ``steps`` is there once, with the value it was given."""
    params = params.sort_values(["step", "depth", "param"], ascending=[True, True, False])
    assert params["step"].tolist() == list(np.repeat(list(steps), P_ROWS))
    row = np.tile(np.arange(P_ROWS), len(steps))
    np.testing.assert_array_equal(params["grad_norm"], params["step"] + row / 100)


# --------------------------------------------------------------- nothing lost


def test_close_writes_the_rows_still_in_memory(tmp_path):
    # the bug: 400 rows recorded, 0 on disk after detach()
    storage = Storage(tmp_path)
    feed(storage, 20)  # 440 parameter rows, far below max_rows_in_memory
    assert on_disk(tmp_path).empty
    storage.close()
    check_values(on_disk(tmp_path), range(20))
    assert len(on_disk(tmp_path, "layers")) == 20 * N_LAYERS


def test_close_is_idempotent_and_later_rows_are_still_written(tmp_path):
    storage = Storage(tmp_path)
    feed(storage, 3)
    storage.close()
    storage.close()
    storage.flush()
    assert len(list(tmp_path.glob("params-*.parquet"))) == 1
    feed(storage, 2, start=3)
    storage.close()
    check_values(on_disk(tmp_path), range(5))
    check_values(storage.to_pandas("params"), range(5))


def test_a_storage_garbage_collected_unclosed_writes_its_rows(tmp_path):
    pending: list[int] = []
    storage = Storage(tmp_path, before_flush=lambda: pending.append(1))
    feed(storage, 7)
    del storage
    gc.collect()
    check_values(on_disk(tmp_path), range(7))
    assert pending == [1]  # the rows held upstream were asked for first


def test_rows_reach_disk_at_interpreter_exit(tmp_path):
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(HERE)!r})
        from test_storage import feed
        from gradprobe.storage import Storage
        keep = Storage({str(tmp_path)!r})
        feed(keep, 9)
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    check_values(on_disk(tmp_path), range(9))


def test_flush_asks_for_upstream_rows_first(tmp_path):
    storage = Storage(tmp_path)
    storage.before_flush = lambda: feed(storage, 4)
    storage.flush()
    check_values(on_disk(tmp_path), range(4))


# ------------------------------------------------------- one file set per rank


def test_two_ranks_sharing_a_log_dir_keep_every_row(tmp_path):
    # the bug: both ranks wrote params-00000.parquet(.tmp): FileNotFoundError, a rank's rows lost
    ranks = [Storage(tmp_path, rank=r, max_rows_in_memory=500) for r in (0, 1)]
    for start in range(0, 256, 64):
        for s in ranks:
            feed(s, 64, start=start)
    for s in ranks:
        s.close()
    names = sorted(p.name for p in tmp_path.glob("params-*.parquet"))
    assert len(names) == len(set(names)) == 2 * 4  # a part per extend of 64 steps
    assert {n.split("-")[1] for n in names} == {"r0", "r1"}
    run = gradprobe.load_run(tmp_path)
    params = run.table("params")
    assert sorted(params["rank"].unique()) == [0, 1]
    for r in (0, 1):
        check_values(params[params["rank"] == r], range(256))
    assert run.variants == ["rank0", "rank1"]


def test_two_processes_writing_one_log_dir_at_once_lose_nothing(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, {here!r})
        from test_storage import feed
        from gradprobe.storage import Storage
        s = Storage({out!r}, rank=int(sys.argv[1]), max_rows_in_memory=200)
        feed(s, 320, per_extend=8)
        s.close()
        """
    ).format(here=str(HERE), out=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(r)]) for r in (0, 1)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    params = gradprobe.load_run(tmp_path).table("params")
    for r in (0, 1):
        check_values(params[params["rank"] == r], range(320))


def test_a_second_run_into_the_same_log_dir_keeps_the_first(tmp_path):
    first = Storage(tmp_path, max_rows_in_memory=100)
    feed(first, 20)
    first.close()
    second = Storage(tmp_path, max_rows_in_memory=100)
    assert second.run_id != first.run_id
    feed(second, 20, start=20)
    second.close()
    check_values(gradprobe.load_run(tmp_path).table("params"), range(40))


def test_a_buffer_without_a_stem_numbers_parts_after_those_in_the_folder(tmp_path):
    for start in (0, 3):
        buf = RecordBuffer("params", tmp_path)
        buf.extend(param_chunk(np.arange(start, start + 3)))
        buf.flush()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "params-00000.parquet",
        "params-00001.parquet",
    ]
    check_values(on_disk(tmp_path), range(6))


def test_write_false_keeps_rows_out_of_the_log_dir(tmp_path):
    storage = Storage(tmp_path, rank=1, write=False, max_rows_in_memory=100)
    feed(storage, 30)
    storage.close()
    assert list(tmp_path.iterdir()) == []
    check_values(storage.to_pandas(), range(30))
    assert set(storage.to_pandas()["rank"]) == {1}


# ------------------------------------------------------ rank and skipped columns


def test_extend_fills_rank_and_skipped_when_absent():
    buf = RecordBuffer("layers", rank=3)
    buf.extend(layer_chunk(np.arange(2)))
    chunk = layer_chunk(np.arange(2, 4)) | {"skipped": np.array([True] * 11 + [False] * 11)}
    buf.extend(chunk)
    t = buf.to_pandas()
    assert t["rank"].dtype == np.int64 and set(t["rank"]) == {3}
    assert t["skipped"].dtype == bool
    assert t.groupby("step")["skipped"].all().tolist() == [False, False, True, False]


def test_conform_gives_old_records_rank_0_and_not_skipped():
    old = pd.DataFrame(param_chunk(np.arange(2)))
    new = conform(old.assign(rank=1, skipped=True), "params")
    both = conform(pd.concat([old, new], ignore_index=True), "params")
    assert list(both.columns[-2:]) == ["rank", "skipped"]
    assert both["rank"].tolist() == [0] * 44 + [1] * 44
    assert both["skipped"].tolist() == [False] * 44 + [True] * 44


def test_old_records_without_a_tier_column_load_as_recording_everything():
    old = pd.DataFrame(param_chunk(np.arange(2)))
    new = conform(old.assign(tier="gradients"), "params")
    both = conform(pd.concat([old, new], ignore_index=True), "params")
    assert both["tier"].tolist() == ["all"] * 44 + ["gradients"] * 44


def test_extend_fills_the_tier_when_absent_and_keeps_a_given_one(tmp_path):
    buf = RecordBuffer("params", tmp_path)
    buf.extend(param_chunk(np.arange(2)))
    later = param_chunk(np.arange(2, 4))
    later["tier"] = np.repeat(np.array(["all", "gradients"], dtype=object), P_ROWS)
    buf.extend(later)
    buf.flush()
    t = buf.to_pandas()
    assert t.groupby("step")["tier"].first().tolist() == ["all", "all", "all", "gradients"]
    assert set(pd.read_parquet(buf.parts[0])["tier"]) == {"all", "gradients"}


def test_extend_rejects_a_missing_column_or_ragged_columns():
    buf = RecordBuffer("params")
    cols = param_chunk(np.arange(2))
    with pytest.raises(ValueError, match="lack column 'grad_norm'"):
        buf.extend({k: v for k, v in cols.items() if k != "grad_norm"})
    with pytest.raises(ValueError, match="'numel' has 3 values"):
        buf.extend(cols | {"numel": np.arange(3)})
    assert len(buf) == 0


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_max_rows_in_memory_is_a_usage_error(bad):
    with pytest.raises(UsageError, match="max_rows_in_memory"):
        Storage(None, max_rows_in_memory=bad)


def test_tensorboard_without_a_log_dir_is_a_usage_error():
    with pytest.raises(UsageError, match="log_dir"):
        Storage(None, tensorboard=True)


# --------------------------------------------------------------- bounded memory


def test_without_log_dir_memory_spills_to_a_private_folder_removed_with_the_storage():
    storage = Storage(None, max_rows_in_memory=1000)
    feed(storage, 200)
    buf = storage.buffers["params"]
    assert buf.in_memory < 1000 and len(buf) == 200 * P_ROWS
    folder = buf.parts[0].parent
    assert folder.is_dir() and folder.name.startswith("gradprobe-params-")
    storage.flush()  # nothing to write without a log_dir: the spill folder is no log_dir
    check_values(storage.to_pandas(), range(200))
    assert len(storage.to_pandas("layers")) == 200 * N_LAYERS
    del storage, buf
    gc.collect()
    assert not folder.exists()


RSS_SCRIPT = """
import gc, os, sys
sys.path.insert(0, {here!r})
from pathlib import Path
from test_storage import feed
from gradprobe.storage import Storage

def rss():
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

warm = Storage(None, max_rows_in_memory=500)  # imports pyarrow, writes and reads a part
feed(warm, 100)
warm.to_pandas()
del warm
gc.collect()
before = rss()
storage = Storage(None, max_rows_in_memory={max_rows})
feed(storage, {steps})
gc.collect()
print(rss() - before, len(storage), storage.buffers["params"].in_memory)
"""


def rss_growth(steps: int, max_rows: int) -> tuple[int, int, int]:
    """RSS growth (bytes) of a fresh process recording ``steps`` California-model steps."""
    code = RSS_SCRIPT.format(here=str(HERE), steps=steps, max_rows=max_rows)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    growth, rows, held = map(int, out.stdout.split())
    return growth, rows, held


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc/self/statm")
def test_memory_without_log_dir_is_bounded_small_scale():
    # the bug: every row stayed in memory: 10,000 steps (330,000 rows) grew RSS by ~56 MB;
    # bounded at 5,000 rows a table, a few MB
    growth, rows, held = rss_growth(10_000, 5_000)
    assert rows == 10_000 * P_ROWS and held < 5_000
    assert growth < 20e6, f"RSS grew {growth / 1e6:.0f} MB"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc/self/statm")
def test_memory_of_a_100000_step_california_run_grows_under_100_mb():
    growth, rows, held = rss_growth(100_000, 100_000)  # the default bound
    assert rows == 100_000 * P_ROWS and held < 100_000
    assert growth < 100e6, f"RSS grew {growth / 1e6:.0f} MB"


# ------------------------------------------------- load_run and the commands


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "log"
    storage = Storage(folder, max_rows_in_memory=300)
    feed(storage, 40)
    storage.close()
    return folder


def test_load_run_reads_a_monitor_log_dir(log_dir):
    # the bug: load_run(log_dir) wanted config.json
    run = gradprobe.load_run(log_dir)
    assert run.kind == "log_dir" and not run.partial
    check_values(run.table("params"), range(40))
    assert set(run.table("params")["rank"]) == {0}
    assert run.variants == ["model"]
    assert len(run.table("layers")) == 40 * N_LAYERS
    for name in ("steps", "epochs", "firstlayer"):
        assert run.table(name).empty
    findings = gradprobe.diagnose(run)
    assert all(f.variant == "model" for f in findings)


def test_a_folder_with_neither_config_nor_records_is_a_usage_error(tmp_path):
    with pytest.raises(NoRunDirError, match="found neither"):
        gradprobe.load_run(tmp_path)


@pytest.mark.parametrize(
    "args",
    [["diagnose"], ["diagnose", "--json"], ["report"], ["plot"]],
    ids=["diagnose", "diagnose-json", "report", "plot"],
)
def test_every_run_dir_command_works_on_a_log_dir(args, log_dir):
    res = CliRunner().invoke(main, [*args, str(log_dir)])
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output and "partial run" not in res.output
    if "--json" in args:
        out = json.loads(res.output)
        assert out["partial"] is False and [v["name"] for v in out["variants"]] == ["model"]
    if args[0] == "report":
        assert (log_dir / "report.html").exists()
    if args[0] == "plot":
        assert (log_dir / "plots" / "heatmap-model.png").exists()


def test_commands_work_on_a_log_dir_of_two_ranks(tmp_path):
    for r in (0, 1):
        s = Storage(tmp_path, rank=r)
        feed(s, 10)
        s.close()
    res = CliRunner().invoke(main, ["diagnose", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "rank0:" in res.output and "rank1:" in res.output
    assert CliRunner().invoke(main, ["plot", str(tmp_path)]).exit_code == 0


@pytest.mark.parametrize("command", ["diagnose", "report", "plot"])
def test_run_dir_commands_on_bad_input_exit_2_with_one_line(command, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for path in (tmp_path / "nope", empty):
        res = CliRunner().invoke(main, [command, str(path)])
        assert res.exit_code == 2, res.output
        assert len(res.output.strip().splitlines()) == 1 and str(path) in res.output


def test_an_old_run_dir_without_rank_loads_with_rank_0(tmp_path):
    folder = tmp_path / "records" / "v"
    folder.mkdir(parents=True)
    pd.DataFrame(param_chunk(np.arange(3))).to_parquet(folder / "params-00000.parquet")
    (tmp_path / "config.json").write_text('{"variants": [{"name": "v"}]}')
    run = gradprobe.load_run(tmp_path)
    assert run.variants == ["v"] and set(run.table("params")["rank"]) == {0}
    assert not run.table("params")["skipped"].any()


def test_storage_files_are_named_by_rank_and_run(tmp_path):
    s = Storage(tmp_path, rank=2)
    feed(s, 1)
    s.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"layers-r2-{s.run_id}-00000.parquet", f"params-r2-{s.run_id}-00000.parquet"]
    assert not any(n.endswith(".tmp") for n in os.listdir(tmp_path))
