"""The torch monitor's records through gradprobe.storage: nothing lost on detach, on leaving the
``with`` block (also when it raises) and at interpreter exit; a log_dir loads and converts."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

import gradprobe
from gradprobe.cli import main

torch = pytest.importorskip("torch")
nn = torch.nn

STEPS = 100  # 4 parameter rows a step: 400 rows, far below max_rows_in_memory


def model_and_opt():  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Sigmoid(), nn.Linear(5, 1))
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def train(model, opt, steps: int = STEPS) -> None:  # type: ignore[no-untyped-def]
    x = torch.randn(8, 3)
    for _ in range(steps):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()


def rows_on_disk(folder: Path) -> int:
    return len(gradprobe.load_run(folder).table("params"))


def test_detach_writes_the_rows_still_in_memory(tmp_path):
    # the bug: 400 rows recorded, 0 on disk after detach()
    model, opt = model_and_opt()
    mon = gradprobe.watch(model, opt, every=1, log_dir=tmp_path)
    train(model, opt)
    mon.detach()
    assert rows_on_disk(tmp_path) == len(mon.to_pandas()) == 4 * STEPS


def test_leaving_the_with_block_writes_the_rows_even_when_it_raises(tmp_path):
    model, opt = model_and_opt()
    with (
        pytest.raises(RuntimeError, match="boom"),
        gradprobe.watch(model, opt, every=1, log_dir=tmp_path),
    ):
        train(model, opt)
        raise RuntimeError("boom")
    assert rows_on_disk(tmp_path) == 4 * STEPS


@pytest.mark.slow  # a fresh process importing torch: ~10 s on a busy 2-core machine
def test_rows_reach_disk_at_interpreter_exit_without_detach(tmp_path):
    here = Path(__file__).resolve().parent
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(here)!r})
        import gradprobe
        from test_storage_monitor import model_and_opt, train
        model, opt = model_and_opt()
        mon = gradprobe.watch(model, opt, every=1, log_dir={str(tmp_path)!r})
        train(model, opt)
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert rows_on_disk(tmp_path) == 4 * STEPS


def test_a_monitor_log_dir_loads_diagnoses_and_has_a_rank_column(tmp_path):
    model, opt = model_and_opt()
    with gradprobe.watch(model, opt, log_dir=tmp_path) as mon:
        train(model, opt, 20)
    run = gradprobe.load_run(tmp_path)
    live = mon.to_pandas()
    assert set(run.table("params")["rank"]) == {0} and len(run.table("params")) == len(live)
    assert list(run.table("params")["grad_norm"]) == list(live["grad_norm"])
    res = CliRunner().invoke(main, ["diagnose", str(tmp_path)])
    assert res.exit_code == 0 and "model:" in res.output, res.output


def test_without_log_dir_rows_beyond_the_bound_spill_and_stay_readable():
    model, opt = model_and_opt()
    with gradprobe.watch(model, opt, every=1, max_rows_in_memory=50) as mon:
        train(model, opt)
    params = mon.to_pandas()
    assert len(params) == 4 * STEPS and sorted(set(params["step"])) == list(range(STEPS))


def test_watch_with_tensorboard_writes_the_recorded_numbers(tmp_path):
    pytest.importorskip("tensorboard")
    from test_tensorboard import expected, read_scalars

    if "tensorflow" not in sys.modules:  # TensorBoard's TF-free reader (see test_tensorboard)
        import types

        sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("notf"))
    model, opt = model_and_opt()
    with gradprobe.watch(model, opt, every=1, log_dir=tmp_path, tensorboard=True) as mon:
        train(model, opt, 10)
    got = read_scalars(tmp_path / "tensorboard" / "rank0")
    assert got == expected(mon.to_pandas("params"), mon.to_pandas("layers"))
    assert len(got["grad_norm/0.weight"]) == 10
