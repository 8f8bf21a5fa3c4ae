"""TensorBoard: Storage(tensorboard=True) and ``gradprobe tensorboard RUN_DIR OUT_DIR``, read
back with TensorBoard's own reader (EventAccumulator) and compared with the records."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from test_storage import N_LAYERS, P_ROWS, feed

import gradprobe
from gradprobe.cli import main
from gradprobe.errors import MissingExtraError
from gradprobe.storage import Storage
from gradprobe.tensorboard import QUANTITIES

pytest.importorskip("tensorboard")


@pytest.fixture(scope="module", autouse=True)
def tensorboard_without_tensorflow() -> None:
    """TensorBoard reads event files through TensorFlow when it is installed (seconds to
    import); its TF-free stub reads them the same way. Ask for the stub as TensorBoard's own
    no-TensorFlow build does, unless TensorFlow is already loaded."""
    if "tensorflow" not in sys.modules:
        sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("notf"))


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in ``folder``'s event files, by tag: (step, value) in step order."""
    from tensorboard.backend.event_processing.event_accumulator import (
        SCALARS,
        EventAccumulator,
    )

    acc = EventAccumulator(str(folder), size_guidance={SCALARS: 0})  # 0: keep every event
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def expected(params: pd.DataFrame, layers: pd.DataFrame) -> dict[str, list[tuple[int, float]]]:
    """The records as TensorBoard scalars (float32), NaN (not measured) left out."""
    out: dict[str, list[tuple[int, float]]] = {}
    for table, frame in (("params", params), ("layers", layers)):
        name = frame["layer"] + ("." + frame["param"] if table == "params" else "")
        for q in QUANTITIES[table]:
            for tag, step, v in zip(name, frame["step"], frame[q], strict=True):
                if not np.isnan(v):
                    out.setdefault(f"{q}/{tag}", []).append((int(step), float(np.float32(v))))
    return {t: sorted(v) for t, v in out.items()}


def test_storage_writes_events_equal_to_the_records(tmp_path):
    storage = Storage(tmp_path, tensorboard=True, max_rows_in_memory=500)
    feed(storage, 100)
    storage.close()
    got = read_scalars(tmp_path / "tensorboard" / "rank0")
    params, layers = storage.to_pandas("params"), storage.to_pandas("layers")
    want = expected(params, layers)
    assert got == want
    assert len(got) == 2 * P_ROWS + 3 * N_LAYERS  # dead_frac: all NaN for sigmoid, no tag
    assert "grad_norm/net.0.weight" in got and "backward_norm/net.20" in got
    assert not any(t.startswith("dead_frac/") for t in got)
    assert [s for s, _ in got["act_rms/net.4"]] == list(range(100))


def test_events_are_readable_before_close_after_flush(tmp_path):
    storage = Storage(tmp_path, tensorboard=True)
    feed(storage, 10)
    storage.flush()
    got = read_scalars(tmp_path / "tensorboard" / "rank0")
    assert len(got["grad_norm/net.0.bias"]) == 10
    storage.close()


def test_each_rank_writes_its_own_tensorboard_run(tmp_path):
    for r in (0, 1):
        s = Storage(tmp_path, rank=r, tensorboard=True)
        feed(s, 5)
        s.close()
    for r in (0, 1):
        assert len(read_scalars(tmp_path / "tensorboard" / f"rank{r}")["act_rms/net.0"]) == 5


def test_a_non_writing_rank_writes_no_events(tmp_path):
    s = Storage(tmp_path, rank=1, write=False, tensorboard=True)
    feed(s, 5)
    s.close()
    assert not (tmp_path / "tensorboard").exists()


def test_cli_converts_a_log_dir_one_run_per_rank(tmp_path):
    log = tmp_path / "log"
    for r in (0, 1):
        s = Storage(log, rank=r, max_rows_in_memory=300)
        feed(s, 30)
        s.close()
    res = CliRunner().invoke(main, ["tensorboard", str(log), str(tmp_path / "tb")])
    assert res.exit_code == 0, res.output
    assert len(res.output.splitlines()) == 2
    run = gradprobe.load_run(log)
    for r in (0, 1):
        params, layers = (run.table(t) for t in ("params", "layers"))
        want = expected(params[params["rank"] == r], layers[layers["rank"] == r])
        assert read_scalars(tmp_path / "tb" / f"rank{r}") == want


def test_cli_converts_a_run_dir_one_run_per_variant(tmp_path):
    root = tmp_path / "run"
    for i, name in enumerate(("deep sigmoid", "relu")):
        s = Storage(root / "records" / name.replace(" ", "_"))
        feed(s, 10 + i)
        s.close()
    (root / "config.json").write_text(
        '{"experiment": "x", "variants": [{"name": "deep sigmoid"}, {"name": "relu"}]}'
    )
    res = CliRunner().invoke(main, ["tensorboard", str(root), str(tmp_path / "tb")])
    assert res.exit_code == 0, res.output
    run = gradprobe.load_run(root)
    for name in ("deep sigmoid", "relu"):
        p, lay = (run.table(t)[run.table(t)["variant"] == name] for t in ("params", "layers"))
        assert read_scalars(tmp_path / "tb" / name.replace(" ", "_")) == expected(p, lay)


def test_cli_bad_input_exits_2_with_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    afile = tmp_path / "file"
    afile.write_text("")
    s = Storage(tmp_path / "log")
    feed(s, 2)
    s.close()
    for args in (
        [str(tmp_path / "nope"), str(tmp_path / "out")],
        [str(empty), str(tmp_path / "out")],
        [str(tmp_path / "log"), str(afile)],
    ):
        res = CliRunner().invoke(main, ["tensorboard", *args])
        assert res.exit_code == 2, res.output
        assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output


def test_missing_tensorboard_says_which_extra_to_install(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m.split(".")[0] == "tensorboard"] + ["tensorboard"]:
        monkeypatch.setitem(sys.modules, name, None)  # None: "import tensorboard" fails
    with pytest.raises(MissingExtraError, match=r"pip install 'gradprobe\[tensorboard\]'"):
        Storage(tmp_path, tensorboard=True)
    s = Storage(tmp_path / "log")
    feed(s, 2)
    s.close()
    res = CliRunner().invoke(main, ["tensorboard", str(tmp_path / "log"), str(tmp_path / "o")])
    assert res.exit_code == 1 and "gradprobe[tensorboard]" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_writing_events_imports_neither_torch_nor_tensorflow(tmp_path):
    here = str(Path(__file__).resolve().parent)
    code = (
        f"import sys; sys.path.insert(0, {here!r})\n"
        "from test_storage import feed\n"
        "from gradprobe.storage import Storage\n"
        "import gradprobe.tensorboard, gradprobe.cli.tensorboard\n"
        f"s = Storage({str(tmp_path)!r}, tensorboard=True)\n"
        "feed(s, 3)\n"
        "s.close()\n"
        "print(' '.join(sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    mods = set(out.stdout.split())
    assert "torch" not in mods and "tensorflow" not in mods and "keras" not in mods
    assert "tensorboard.compat.proto.event_pb2" in mods
    assert list((tmp_path / "tensorboard" / "rank0").glob("events.out.tfevents.*"))
