"""A sweep: what varies (CLI lists or a TOML file), validated once, expanded into cells.

The keys and their checks are ``gradprobe run``'s (:data:`gradprobe.experiments.spec.OPTIONS`):
a sweep takes a list where a run takes one value.

A *cell* is one configuration (data, model, training) trained once per seed. Keys, on the
command line (``--key a,b,c``) and in a spec file (``key = [a, b, c]`` or ``key = a``):

==============  ==========================================================================
data            built-in experiment (california, classification), scikit-learn dataset
                (breast_cancer, digits, diabetes, wine, make_classification, make_regression,
                make_moons) or a .csv/.parquet file; file only: ``target``, ``task``
data_params     generator parameters, e.g. ``{n_samples = 300, noise = 0.2}`` (TOML table)
variant         the built-in experiment's variant the sweep starts from
activation      sigmoid, tanh, relu, leaky_relu, elu, selu, gelu, silu, linear
depth, width    hidden layers, units per hidden layer (whole numbers >= 1)
init            glorot_uniform, glorot_normal, he_uniform, he_normal, lecun_normal,
                orthogonal, torch_default
norm            none, batch, layer
residual        on/off (true/false); residual_scale > 0
optimizer       sgd, momentum, adam, adamw, rmsprop;  lr > 0
epochs          >= 1;  batch_size >= 0 (0: all rows);  rows >= 0 (0: all);  clip >= 0 (0: off)
seeds           a count N (seeds 0..N-1) or a list of seeds
remedy          remedies of the catalogue (the names diagnose prints), crossed with the other axes
every           record every N-th step, or auto (about 100 records per training; the default)
batched         auto, on, off
==============  ==========================================================================
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradprobe.errors import UsageError
from gradprobe.experiments.data import SKLEARN_DATASETS, TASKS
from gradprobe.experiments.spec import (
    EXPERIMENTS,
    OPTIONS,
    ModelSpec,
    TrainSpec,
    load_toml,  # noqa: F401  (re-exported: gradprobe.lab.load_toml)
    parse_scalar,
    whole,
)

MODEL_AXES = ("activation", "depth", "width", "init", "norm", "residual", "residual_scale")
TRAIN_AXES = ("optimizer", "lr", "epochs", "batch_size", "rows", "clip")
AXES = MODEL_AXES + TRAIN_AXES
SETTINGS = ("data", "data_params", "target", "task", "variant", "seeds", "every", "batched")
KEYS = SETTINGS + AXES + ("remedy",)
BATCHED = ("auto", "on", "off")
BUILTIN = tuple(EXPERIMENTS)
DEFAULT_SEEDS = 3


def _whole(lo: int) -> Any:
    return whole(lo)


CHECKS = {k: OPTIONS[k].check for k in AXES}  # the checks of gradprobe run's options


@dataclass(frozen=True)
class DataSpec:
    """Where the rows come from: ``kind`` is builtin, sklearn or file."""

    kind: str
    name: str
    params: tuple[tuple[str, Any], ...] = ()
    target: str | None = None
    task: str | None = None
    data_home: str | None = None

    def identity(self) -> dict[str, Any]:
        """What makes the data what it is (a file's size and time stand for its content)."""
        d: dict[str, Any] = {"kind": self.kind, "name": self.name, "params": dict(self.params)}
        if self.kind == "file":
            st = Path(self.name).stat()
            d.update(target=self.target, task=self.task, size=st.st_size, mtime=st.st_mtime_ns)
        return d

    @property
    def label(self) -> str:
        return Path(self.name).name if self.kind == "file" else self.name


@dataclass(frozen=True)
class Cell:
    """One configuration of a sweep, trained once per seed. ``values``: the swept axes' values."""

    key: str
    values: tuple[tuple[str, Any], ...]
    model: ModelSpec
    train: TrainSpec
    seeds: tuple[int, ...]
    every: int = 1

    @property
    def label(self) -> str:
        return " ".join(f"{k}={_show(v)}" for k, v in self.values) or "base"

    def config(self) -> dict[str, Any]:
        """The cell's full configuration as flat columns (model and training)."""
        m, t = self.model, self.train
        return {
            "activation": m.activation,
            "depth": m.depth,
            "width": m.width,
            "init": m.init,
            "norm": m.norm,
            "residual": m.residual,
            "residual_scale": m.residual_scale,
            "optimizer": t.optimizer,
            "lr": t.lr,
            "epochs": t.epochs,
            "batch_size": t.batch_size or 0,
            "rows": t.rows or 0,
            "clip": t.clip_norm or 0.0,
        }


def _show(v: Any) -> str:
    return ("on" if v else "off") if isinstance(v, bool) else str(v)


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: the data, the base configuration, the axes and the seeds."""

    data: DataSpec
    variant: str | None
    axes: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    seeds: tuple[int, ...] = tuple(range(DEFAULT_SEEDS))
    every: int = 0
    batched: str = "auto"
    source: str = "command line"
    remedies: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": dataclasses.asdict(self.data),
            "variant": self.variant,
            "axes": {k: list(v) for k, v in self.axes.items()},
            "seeds": list(self.seeds),
            "every": self.every,
            "batched": self.batched,
            "remedies": list(self.remedies),
        }

    @property
    def n_cells(self) -> int:
        if self.remedies:
            return len(self.remedies)
        n = 1
        for v in self.axes.values():
            n *= len(v)
        return n


class _Where:
    """Formats messages that name the file (or the command line), the key and the valid values."""

    def __init__(self, source: str) -> None:
        self.source = source

    def key(self, key: str) -> str:
        return (
            f"--{key.replace('_', '-')}"
            if self.source == "command line"
            else (f"{self.source}: key {key!r}")
        )

    def fail(self, key: str, got: Any, expected: str) -> UsageError:
        return UsageError(f"{self.key(key)}: got {got!r}, expected {expected}")


def _split(value: Any) -> list[Any]:
    """A CLI string 'a,b' or a TOML scalar/list as a list of raw values."""
    if isinstance(value, str):
        return [parse_scalar(s.strip()) for s in value.split(",") if s.strip()]
    if isinstance(value, list):
        return value
    return [value]


def parse(raw: Mapping[str, Any], source: str = "command line") -> SweepSpec:
    """Validate a mapping of keys (from the CLI or a TOML file) into a :class:`SweepSpec`."""
    where = _Where(source)
    unknown = [k for k in raw if k not in KEYS]
    if unknown:
        raise UsageError(
            f"{where.key(unknown[0])} is not a sweep key: expected one of {', '.join(KEYS)}"
        )
    data = _data_spec(raw, where)
    variant = raw.get("variant")
    if variant is not None:
        if data.kind != "builtin":
            raise where.fail(
                "variant", variant, f"no variant (only {', '.join(BUILTIN)} have variants)"
            )
        names = [v.name for v in EXPERIMENTS[data.name].variants]
        if variant not in names:
            raise where.fail("variant", variant, f"one of {', '.join(names)}")
    axes = {}
    for key in AXES:
        if raw.get(key) is None:
            continue
        values = _split(raw[key])
        if not values:
            raise where.fail(key, raw[key], "at least one value")
        try:
            checked = [CHECKS[key](v) for v in values]
        except ValueError as exc:
            bad = next(v for v in values if _fails(CHECKS[key], v))
            raise where.fail(key, bad, str(exc)) from None
        axes[key] = tuple(dict.fromkeys(checked))
    if raw.get("remedy") is not None:
        axes["remedy"] = _remedies(raw["remedy"], where)
    seeds = _seeds(raw.get("seeds", DEFAULT_SEEDS), where)
    every = raw.get("every", "auto")
    if isinstance(every, str):
        every = 0 if every == "auto" else parse_scalar(every)
    if every != 0:
        try:
            every = _whole(1)(every)
        except ValueError:
            raise where.fail("every", every, "a whole number >= 1 or auto") from None
    batched = raw.get("batched", "auto")
    if batched not in BATCHED:
        raise where.fail("batched", batched, f"one of {', '.join(BATCHED)}")
    return SweepSpec(data, variant, axes, seeds, every, batched, source)


def _remedies(value: Any, where: _Where) -> tuple[str, ...]:
    """Remedy names of the catalogue the lab can train (aliases accepted), as an axis."""
    from gradprobe.diagnosis.remedies import TRIALS, canonical

    out = []
    for name in (str(v) for v in _split(value)):
        try:
            out.append(canonical(name, trial=True))
        except UsageError:
            raise where.fail("remedy", name, f"one of {', '.join(TRIALS)}") from None
    if not out:
        raise where.fail("remedy", value, "at least one remedy")
    return tuple(dict.fromkeys(out))


def _fails(check: Any, v: Any) -> bool:
    try:
        check(v)
    except ValueError:
        return True
    return False


def _seeds(value: Any, where: _Where) -> tuple[int, ...]:
    vals = _split(value)
    if len(vals) == 1 and isinstance(value, (int, str)) and not str(value).count(","):
        n = vals[0]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise where.fail("seeds", value, "a count >= 1 or a list of seeds")
        return tuple(range(n))
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in vals):
        raise where.fail("seeds", value, "a count >= 1 or a list of whole numbers >= 0")
    return tuple(dict.fromkeys(vals))


def _data_spec(raw: Mapping[str, Any], where: _Where) -> DataSpec:
    name = raw.get("data")
    if not name or not isinstance(name, str):
        raise where.fail("data", name, "an experiment, a scikit-learn dataset or a .csv/.parquet")
    params = raw.get("data_params") or {}
    if isinstance(params, str):
        params = _kv(params, where)
    if not isinstance(params, Mapping):
        raise where.fail("data_params", params, "a table of generator parameters")
    target, task = raw.get("target"), raw.get("task")
    if task is not None and task not in TASKS:
        raise where.fail("task", task, f"one of {', '.join(TASKS)}")
    is_file = Path(name).suffix.lower() in (".csv", ".parquet", ".pq")
    if is_file:
        if not target:
            raise where.fail("target", target, f"the name of the target column of {name}")
        return DataSpec("file", name, (), str(target), task)
    if target or task:
        raise where.fail("target" if target else "task", target or task, "only with a data file")
    if name in BUILTIN or name in SKLEARN_DATASETS:
        kind = "builtin" if name in BUILTIN else "sklearn"
        if params and not name.startswith("make_"):
            raise where.fail("data_params", dict(params), f"no parameters: {name} has none")
        return DataSpec(kind, name, tuple(sorted(params.items())))
    raise where.fail(
        "data", name, f"one of {', '.join(BUILTIN + SKLEARN_DATASETS)} or a .csv/.parquet file"
    )


def _kv(text: str, where: _Where) -> dict[str, Any]:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise where.fail("data_params", part, "key=value pairs, e.g. n_samples=300,noise=0.2")
        k, v = part.split("=", 1)
        out[k.strip()] = parse_scalar(v.strip())
    return out


# ------------------------------------------------------------------ expansion
GENERIC_MODEL = ModelSpec(depth=5, width=32, activation="relu")
GENERIC_TRAIN = TrainSpec(optimizer="adam", lr=0.01, epochs=10, loss="mse", batch_size=32)


def base(spec: SweepSpec, task: str, outputs: int) -> tuple[ModelSpec, TrainSpec]:
    """The configuration the axes change: the experiment's variant, or generic defaults."""
    from gradprobe.experiments.data import loss_for

    if spec.data.kind == "builtin":
        exp = EXPERIMENTS[spec.data.name]
        variant = exp.variant(spec.variant) if spec.variant else exp.variants[0]
        return variant.model, exp.train
    out_act = "sigmoid" if task == "binary" else "linear"
    model = dataclasses.replace(GENERIC_MODEL, output_activation=out_act, outputs=outputs)
    return model, dataclasses.replace(GENERIC_TRAIN, loss=loss_for(task))


RECORDS = 100  # recorded steps per training when ``every`` is auto


def record_every(spec: SweepSpec, train: TrainSpec, n_train: int | None) -> int:
    """``spec.every``, or for auto (0) the step interval that records about :data:`RECORDS`
    steps of one training (every step of a short one)."""
    if spec.every or not n_train:
        return spec.every or 1
    rows = min(train.rows or n_train, n_train)
    per_epoch = -(-rows // min(train.batch_size or rows, rows))
    return max(1, per_epoch * train.epochs // RECORDS)


def expand(
    spec: SweepSpec, model: ModelSpec, train: TrainSpec, data_id: Any, n_train: int | None = None
) -> list[Cell]:
    """Every combination of the axes, in order, as validated cells (``n_train``: training rows,
    for ``every = auto``)."""
    keys = list(spec.axes)
    cells = []
    for combo in itertools.product(*(spec.axes[k] for k in keys)):
        values = dict(zip(keys, combo, strict=True))
        m, t = model, train
        if "remedy" in values:  # the remedy first, then the other axes on top of it
            from gradprobe.lab.remedies import apply

            m, t = apply(values["remedy"], model, train)
        m = dataclasses.replace(m, **{k: v for k, v in values.items() if k in MODEL_AXES})
        t_over = {k: v for k, v in values.items() if k in TRAIN_AXES}
        if "clip" in t_over:
            t_over["clip_norm"] = t_over.pop("clip") or None
        for k in ("batch_size", "rows"):
            if k in t_over:
                t_over[k] = t_over[k] or None
        t = dataclasses.replace(t, seed=0, **t_over)
        m.validate()
        t.validate()
        ident = {"data": data_id, "model": dataclasses.asdict(m), "train": dataclasses.asdict(t)}
        every = record_every(spec, t, n_train)
        ident.update(seeds=list(spec.seeds), every=every)
        key = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
        cells.append(Cell(key, tuple(values.items()), m, t, spec.seeds, every))
    return cells


def check_cells(cells: list[Cell], n_train: int) -> None:
    """Combinations that cannot train, found before anything starts."""
    for c in cells:
        rows = min(c.train.rows or n_train, n_train)
        batch = min(c.train.batch_size or rows, rows)
        if c.model.norm == "batch" and (batch < 2 or rows % batch == 1):
            raise UsageError(
                f"cell {c.label}: norm=batch needs at least 2 rows in every batch, but "
                f"{rows} rows in batches of {batch} leave a batch of 1; change batch_size or rows"
            )
