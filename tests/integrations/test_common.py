"""The framework-free helpers the callbacks share."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from gradprobe.errors import UnknownChoiceError, UsageError
from gradprobe.integrations._common import base_optimizer, check_every, check_logged, scalars


class Records:
    """Two small tables behind ``to_pandas(table)``, counting the reads."""

    def __init__(self) -> None:
        self.read: list[str] = []
        self.tables = {
            "params": pd.DataFrame(
                {
                    "step": [0, 0, 1, 1],
                    "layer": ["fc", "fc", "fc", "fc"],
                    "param": ["weight", "bias", "weight", "bias"],
                    "grad_norm": [1.0, 2.0, 3.0, 4.0],
                    "update_ratio": [0.1, math.nan, 0.3, math.nan],
                }
            ),
            "layers": pd.DataFrame(
                {"step": [0, 1], "layer": ["fc", "fc"], "backward_norm": [5.0, math.nan]}
            ),
        }

    def to_pandas(self, table: str) -> pd.DataFrame:
        self.read.append(table)
        return self.tables[table]


def test_scalars_names_each_number_by_statistic_layer_and_parameter_and_drops_nan():
    out = scalars(Records(), ("grad_norm", "update_ratio", "backward_norm"), after=-1)
    assert out == {
        0: {
            "gradprobe/grad_norm/fc.weight": 1.0,
            "gradprobe/grad_norm/fc.bias": 2.0,
            "gradprobe/update_ratio/fc.weight": 0.1,
            "gradprobe/backward_norm/fc": 5.0,
        },
        1: {
            "gradprobe/grad_norm/fc.weight": 3.0,
            "gradprobe/grad_norm/fc.bias": 4.0,
            "gradprobe/update_ratio/fc.weight": 0.3,
        },
    }


def test_scalars_keeps_only_steps_after_the_last_sent_and_reads_only_tables_needed():
    records = Records()
    assert list(scalars(records, ("grad_norm",), after=0)) == [1]
    assert records.read == ["params"]


def test_base_optimizer_unwraps_nested_wrappers():
    class Inner:
        pass

    class Wrapper:
        def __init__(self, optimizer: object) -> None:
            self.optimizer = optimizer

    inner = Inner()
    assert base_optimizer(Wrapper(Wrapper(inner))) is inner
    assert base_optimizer(inner) is inner


def test_options_are_checked():
    assert check_every(3) == 3
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(UsageError):
            check_every(bad)
    assert check_logged(["act_rms", "grad_norm"]) == ("act_rms", "grad_norm")
    with pytest.raises(UnknownChoiceError, match="expected one of grad_norm"):
        check_logged(["nope"])
