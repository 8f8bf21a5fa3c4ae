"""What the rules read: one variant's two record tables, with step x depth grids ready.

Steps the optimizer skipped (rows with ``skipped`` True: a loss scaler found inf/NaN and did not
step) are taken out of both tables here and kept as :attr:`VariantRecords.skipped_steps`, so no
rule but ``skipped_steps`` ever reads their (loss-scaled, possibly infinite) numbers.

:func:`split` accepts what :func:`gradprobe.diagnosis.diagnose` accepts: a loaded
:class:`~gradprobe.run.Run`, a live monitor (anything with ``to_pandas(table)``), or a
``(params, layers)`` pair of frames (see :mod:`gradprobe.records`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from gradprobe.errors import UsageError
from gradprobe.records import TABLES, empty_frame, weight_rows


@dataclass(frozen=True)
class VariantRecords:
    """The ``params`` and ``layers`` records of one variant (``variant`` is '' when unnamed)."""

    variant: str
    params: pd.DataFrame
    layers: pd.DataFrame
    prediction: Any = None  # gradprobe.theory's MLPPrediction when the run's config allows one
    skipped_steps: tuple[int, ...] = ()  # steps the optimizer skipped (left out of both tables)
    optimizer: str = ""  # the optimizer's class name when known (a live monitor), else ''
    losses: pd.DataFrame | None = None  # a run's training loss on every step (step, loss)

    @property
    def multi_iteration_steps(self) -> bool:
        """True for optimizers whose one step is many iterations (LBFGS with its line search):
        per-step update ratios of first-order training do not apply to them."""
        return self.optimizer in MULTI_ITERATION_OPTIMIZERS

    @cached_property
    def zero_steps(self) -> tuple[int, ...]:
        """Steps where every recorded gradient is exactly zero (no gradient reached any weight:
        a fully masked batch, a loss times 0); NaN or missing norms never count as zero."""
        p = self.params
        if p.empty:
            return ()
        zero = (p["grad_norm"] == 0).groupby(p["step"]).all()
        return tuple(int(s) for s in zero.index[zero.to_numpy()])

    @cached_property
    def weights(self) -> pd.DataFrame:
        """Rows of weight matrices and kernels only."""
        return weight_rows(self.params)

    @cached_property
    def steps(self) -> np.ndarray:
        """The recorded steps, ascending."""
        s = pd.concat([self.params["step"], self.layers["step"]])
        return np.sort(s.unique()).astype(np.int64)

    def grid(self, quantity: str) -> pd.DataFrame:
        """``quantity`` as a step x depth frame: weight rows for a ``params`` column, layer rows
        for a ``layers`` column; columns sorted input to output."""
        frame = self.weights if quantity in TABLES["params"] else self.layers
        if frame.empty:
            return pd.DataFrame()
        g = frame.pivot_table(index="step", columns="depth", values=quantity, aggfunc="first")
        return g.sort_index(axis=0).sort_index(axis=1)

    @cached_property
    def names(self) -> dict[int, str]:
        """depth -> layer name."""
        both = pd.concat([self.params[["depth", "layer"]], self.layers[["depth", "layer"]]])
        return dict(zip(both["depth"].astype(int), both["layer"].astype(str), strict=False))

    def layer_names(self, depths: Any) -> tuple[str, ...]:
        """The module names of the layers at 0-based record ``depths``."""
        return tuple(self.names.get(int(d), str(d)) for d in depths)

    @staticmethod
    def numbers(depths: Any) -> tuple[int, ...]:
        """The layer numbers a person reads: 1 at the input (record depth 0), up to the output."""
        return tuple(int(d) + 1 for d in depths)

    @cached_property
    def activations(self) -> tuple[str, ...]:
        """The distinct activations of the hidden layers (input to output), e.g. ('sigmoid',)."""
        acts = self.layers.sort_values("depth")["activation"]
        return tuple(dict.fromkeys(a for a in acts if a))

    @cached_property
    def hidden_widths(self) -> tuple[int, ...]:
        """Output widths of every layer but the last, read from the bias sizes (() if unknown)."""
        b = self.params[self.params["param"] == "bias"]
        if b.empty:
            return ()
        first = b[b["step"] == b["step"].min()].sort_values("depth")
        return tuple(int(n) for n in first["numel"].iloc[:-1])

    @cached_property
    def beta(self) -> float:
        """Hanin's beta = sum 1/n over the hidden widths (0 when unknown)."""
        return float(sum(1.0 / n for n in self.hidden_widths if n > 0))

    @property
    def log_tolerance(self) -> float:
        """max(ln 2, 2 sqrt(5 beta)): how far one net's log-ratio may stray by chance."""
        return max(math.log(2.0), 2.0 * math.sqrt(5.0 * self.beta))


def tables_of(obj: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(params, layers) of a Run, a monitor or a pair of frames."""
    if isinstance(obj, (tuple, list)):
        if len(obj) != 2 or not all(isinstance(f, pd.DataFrame) for f in obj):
            raise UsageError(
                "diagnose() takes a (params, layers) pair of DataFrames, got "
                f"{type(obj).__name__} of {len(obj)} item(s)"
            )
        return obj[0], obj[1]
    if isinstance(obj, pd.DataFrame):
        return obj, empty_frame("layers")
    if hasattr(obj, "to_pandas"):
        return obj.to_pandas("params"), obj.to_pandas("layers")
    raise UsageError(
        f"diagnose() takes a Run, a Monitor or a (params, layers) pair, got {type(obj).__name__}"
    )


def _ordered_variants(obj: Any, params: pd.DataFrame, layers: pd.DataFrame) -> list[str]:
    seen = list(pd.unique(pd.concat([params["variant"], layers["variant"]]).astype(str)))
    preferred = list(getattr(obj, "variants", []) or []) if hasattr(obj, "config") else []
    return [v for v in preferred if v in seen] + [v for v in seen if v not in preferred]


MULTI_ITERATION_OPTIMIZERS = frozenset({"LBFGS"})


def _optimizer_name(obj: Any) -> str:
    """The class name of a live monitor's optimizer ('' when none or unknown)."""
    opt = getattr(obj, "optimizer", None)
    return "" if opt is None or isinstance(obj, (tuple, list, pd.DataFrame)) else type(opt).__name__


def split(obj: Any) -> list[VariantRecords]:
    """One :class:`VariantRecords` per variant, in the run's order (skipped steps set apart)."""
    params, layers = tables_of(obj)
    if "variant" not in params.columns and "variant" not in layers.columns:
        return [_records("", params, layers, None, _optimizer_name(obj))]
    params = params if "variant" in params.columns else params.assign(variant="")
    layers = layers if "variant" in layers.columns else layers.assign(variant="")
    losses = _losses(obj)
    return [
        _records(
            v,
            params[params["variant"] == v],
            layers[layers["variant"] == v],
            _prediction(obj, v),
            losses=None if losses is None else losses[losses["variant"] == v],
        )
        for v in _ordered_variants(obj, params, layers)
    ]


def _losses(obj: Any) -> pd.DataFrame | None:
    """A loaded run's per-step training loss (``gradprobe run`` records every step's), if any."""
    tables = getattr(obj, "tables", None)
    if not isinstance(tables, dict) or not isinstance(getattr(obj, "config", None), dict):
        return None
    steps = tables.get("steps")
    if not isinstance(steps, pd.DataFrame) or not {"variant", "step", "loss"} <= set(steps):
        return None
    return steps[["variant", "step", "loss"]]


def _skipped(frame: pd.DataFrame) -> set[int]:
    if "skipped" not in frame.columns or frame.empty:
        return set()
    flag = frame["skipped"].eq(True).to_numpy()  # NaN (rows from before the column): False
    return {int(s) for s in frame["step"].to_numpy()[flag]}


def _records(
    variant: str,
    params: pd.DataFrame,
    layers: pd.DataFrame,
    prediction: Any,
    optimizer: str = "",
    losses: pd.DataFrame | None = None,
) -> VariantRecords:
    """The variant's records with every row of a skipped step set apart."""
    skipped = _skipped(params) | _skipped(layers)
    if skipped:
        params = params[~params["step"].isin(skipped)]
        layers = layers[~layers["step"].isin(skipped)]
    return VariantRecords(
        variant, params, layers, prediction, tuple(sorted(skipped)), optimizer, losses
    )


def _prediction(obj: Any, variant: str) -> Any:
    """The theory's prediction for a variant of a loaded run (None for anything else)."""
    config = getattr(obj, "config", None)
    if not isinstance(config, dict):
        return None
    from gradprobe.theory.runs import predict_variant

    return predict_variant(config, variant)
