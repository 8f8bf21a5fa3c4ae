"""What the framework callbacks share: finding the real optimizer, turning rows into scalars.

Framework-free: neither torch nor a training framework is imported here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from gradprobe.errors import UnknownChoiceError, UsageError
from gradprobe.records import LAYER_STATS, PARAM_STATS

# what a callback sends to the framework's logger by default: per parameter the gradient norm and
# the update ratio, per layer the backward signal
DEFAULT_LOGGED = ("grad_norm", "update_ratio", "backward_norm")
PREFIX = "gradprobe"


def check_every(every: object) -> int | None:
    """``every`` as given, once checked (the callbacks check it when made, not at fit time);
    ``None``: the overhead budget decides."""
    if every is None:
        return None
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise UsageError(f"every must be a whole number >= 1, got {every!r}")
    return every


def check_logged(names: Iterable[str]) -> tuple[str, ...]:
    """The statistics to log, each a column of the ``params`` or ``layers`` table."""
    names = tuple(names)
    for name in names:
        if name not in PARAM_STATS and name not in LAYER_STATS:
            raise UnknownChoiceError("statistic to log", name, PARAM_STATS + LAYER_STATS)
    return names


def base_optimizer(optimizer: Any) -> Any:
    """The torch optimizer inside a framework's wrapper.

    Lightning's ``LightningOptimizer`` and accelerate's ``AcceleratedOptimizer`` hold the real
    optimizer as ``.optimizer`` (both also pass as instances of its class, so ``isinstance`` cannot
    tell them apart); the monitor's step hooks must go on the real one, whose ``step`` the
    wrapper calls.
    """
    seen = {id(optimizer)}
    while getattr(optimizer, "optimizer", None) is not None:
        optimizer = optimizer.optimizer
        if id(optimizer) in seen:
            break
        seen.add(id(optimizer))
    return optimizer


def scalars(records: Any, logged: tuple[str, ...], after: int) -> dict[int, dict[str, float]]:
    """Per recorded step later than ``after``: ``{"gradprobe/<stat>/<layer>[.<param>]": value}``.

    ``records`` is anything with ``to_pandas(table)`` (a monitor); only the tables holding a
    ``logged`` statistic are read. Parameter statistics are named ``<layer>.<param>``, layer
    statistics ``<layer>``; values that were not measured (NaN) are left out.
    """
    out: dict[int, dict[str, float]] = {}
    for table, columns, key in (
        ("params", PARAM_STATS, _param_key),
        ("layers", LAYER_STATS, _layer_key),
    ):
        stats = [s for s in logged if s in columns]
        if not stats:
            continue
        frame = records.to_pandas(table)
        new = frame[frame["step"] > after]
        names = key(new)
        steps = new["step"].to_numpy()
        for stat in stats:
            values = new[stat].to_numpy(dtype=np.float64)
            keep = ~np.isnan(values)
            for step, name, value in zip(steps[keep], names[keep], values[keep], strict=True):
                out.setdefault(int(step), {})[f"{PREFIX}/{stat}/{name}"] = float(value)
    return dict(sorted(out.items()))


def _param_key(frame: pd.DataFrame) -> np.ndarray:
    return (frame["layer"].astype(str) + "." + frame["param"].astype(str)).to_numpy()


def _layer_key(frame: pd.DataFrame) -> np.ndarray:
    return frame["layer"].astype(str).to_numpy()
