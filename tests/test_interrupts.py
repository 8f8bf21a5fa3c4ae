"""gradprobe._interrupts.held_interrupts: a Ctrl-C inside the block waits for its end, and
records moving between places when it comes are all kept (RecordBuffer parts here; the
monitors' pending rows in tests/torch/test_monitor_lifecycle.py and tests/keras)."""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest

from gradprobe._interrupts import held_interrupts
from gradprobe.records import RecordBuffer


def ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)


def test_a_ctrl_c_inside_the_block_is_raised_when_the_block_ends():
    done = []
    with pytest.raises(KeyboardInterrupt), held_interrupts():
        ctrl_c()
        done.append("rest of the block")
    assert done == ["rest of the block"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_handler_that_was_set_gets_the_signal_and_is_set_again():
    got: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    try:
        with held_interrupts():
            ctrl_c()
            assert got == []
        assert got == [signal.SIGINT]
        ctrl_c()
        assert got == [signal.SIGINT, signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, previous)


def test_an_ignored_ctrl_c_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with held_interrupts():
            ctrl_c()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_outside_the_main_thread_the_block_just_runs():
    seen = []

    def work() -> None:
        with held_interrupts():
            seen.append(signal.getsignal(signal.SIGINT))

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen == [signal.default_int_handler]


def test_a_ctrl_c_while_a_part_is_written_loses_no_row_and_lists_the_part_once(
    tmp_path, monkeypatch
):
    import gradprobe.records as records

    write = records._write_chunks

    def interrupted_write(*args, **kwargs):
        ctrl_c()  # lands while the part is being written
        write(*args, **kwargs)

    monkeypatch.setattr(records, "_write_chunks", interrupted_write)
    buf = RecordBuffer("layers", folder=tmp_path, max_rows=10)
    n = 8
    cols = {
        "step": np.arange(n),
        "layer": np.array(["a"] * n, dtype=object),
        "depth": np.ones(n, dtype=np.int64),
        "kind": np.array(["Linear"] * n, dtype=object),
        "activation": np.array(["relu"] * n, dtype=object),
    }
    cols.update({c: np.zeros(n) for c in records.LAYER_STATS})
    buf.extend(cols)
    with pytest.raises(KeyboardInterrupt):
        buf.extend({**cols, "step": np.arange(n, 2 * n)})  # 16 rows >= 10: written as a part
    assert len(buf.parts) == 1 and buf.in_memory == 0
    assert sorted(buf.to_pandas()["step"]) == list(range(2 * n))
