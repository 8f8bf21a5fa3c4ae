"""Typed, validated configuration of the built-in experiments (no framework needed).

A :class:`RunConfig` is resolved once from an experiment's defaults and the user's options,
validated with messages that list the valid values, and saved as ``config.json`` in every run.

One option table, :data:`OPTIONS`, serves ``gradprobe run`` and ``gradprobe sweep`` alike: the
same keys (model: activation, depth, width, init, norm, residual, residual_scale; training:
optimizer, lr, epochs, batch_size, rows, clip, seed; capture: every), the same checks and the
same messages, from command-line flags (strings) or a TOML file (:func:`load_toml`). ``run``
takes one value per key (:func:`options`); ``sweep`` takes lists (:mod:`gradprobe.lab.spec`).

Example:
    >>> options({"norm": "batch", "residual": "on", "clip": "1"})
    {'norm': 'batch', 'residual': True, 'clip': 1.0}
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradprobe.errors import UnknownChoiceError, UsageError
from gradprobe.experiments.init import INITS

ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu", "gelu", "silu", "linear")
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "rmsprop")
LOSSES = ("mse", "bce", "ce")
NORMS = ("none", "batch", "layer")
FRAMEWORKS = ("torch", "keras")


# ------------------------------------------------------------------ the shared option table
def whole(lo: int) -> Callable[[Any], int]:
    """A check: a whole number >= ``lo``."""

    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"a whole number >= {lo}")
        return v

    return check


def positive(v: Any) -> float:
    """A check: a finite number > 0."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < float("inf"):
        raise ValueError("a positive number")
    return float(v)


def nonneg(v: Any) -> float:
    """A check: a finite number >= 0."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < float("inf"):
        raise ValueError("a number >= 0")
    return float(v)


def onoff(v: Any) -> bool:
    """A check: on/off, true/false, yes/no, 1/0."""
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("on", "true", "yes", "1", "off", "false", "no", "0"):
        return v.lower() in ("on", "true", "yes", "1")
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    raise ValueError("on or off (true or false)")


def one_of(choices: tuple[str, ...]) -> Callable[[Any], str]:
    """A check: one of ``choices``."""

    def check(v: Any) -> str:
        if v not in choices:
            raise ValueError(f"one of {', '.join(choices)}")
        return str(v)

    return check


@dataclass(frozen=True)
class Option:
    """One configuration key: its ``section`` (model, train, capture), check, and help."""

    section: str
    check: Callable[[Any], Any]
    help: str


OPTIONS: dict[str, Option] = {
    "activation": Option("model", one_of(ACTIVATIONS), f"Activation: {', '.join(ACTIVATIONS)}."),
    "depth": Option("model", whole(1), "Hidden layers."),
    "width": Option("model", whole(1), "Units per hidden layer."),
    "init": Option("model", one_of(INITS), f"Initialisation: {', '.join(INITS)}."),
    "norm": Option(
        "model", one_of(NORMS), "Normalisation before each activation: none, batch, layer."
    ),  # fmt: skip
    "residual": Option("model", onoff, "Residual connections: on or off."),
    "residual_scale": Option("model", positive, "Residual branch scale (> 0; default 1)."),
    "optimizer": Option("train", one_of(OPTIMIZERS), f"Optimizer: {', '.join(OPTIMIZERS)}."),
    "lr": Option("train", positive, "Learning rate."),
    "epochs": Option("train", whole(1), "Epochs."),
    "batch_size": Option("train", whole(0), "Batch size (0: all rows)."),
    "rows": Option("train", whole(0), "Training rows used (0: all)."),
    "clip": Option("train", nonneg, "Clip the gradient's global norm to this (0: off)."),
    "seed": Option("train", whole(0), "Random seed (same seed, same numbers)."),
    "every": Option("capture", whole(1), "Record every N-th step."),
}
_CHOICES = {"activation": ACTIVATIONS, "init": INITS, "norm": NORMS, "optimizer": OPTIMIZERS}
MODEL_KEYS = tuple(k for k, o in OPTIONS.items() if o.section == "model")
TRAIN_KEYS = tuple(k for k, o in OPTIONS.items() if o.section == "train")


def flag(key: str) -> str:
    """The command-line flag of a key: ``batch_size`` -> ``--batch-size``."""
    return "--" + key.replace("_", "-")


def parse_scalar(s: str) -> Any:
    """A command-line string as int, float or itself."""
    for conv in (int, float):
        try:
            return conv(s)
        except ValueError:
            pass
    return s


def check_option(key: str, value: Any, source: str = "command line") -> Any:
    """``value`` of ``key`` checked and typed (strings from flags are parsed first); a
    UsageError naming the flag (or the file and key), what was got and what is expected."""
    where = flag(key) if source == "command line" else f"{source}: key {key!r}"
    if key not in OPTIONS:
        raise UsageError(f"{where} is not an option: expected one of {', '.join(OPTIONS)}")
    raw = parse_scalar(value.strip()) if isinstance(value, str) else value
    try:
        return OPTIONS[key].check(raw)
    except ValueError as exc:
        choices = _CHOICES.get(key)
        if choices is not None and source == "command line":
            raise UnknownChoiceError(key, value, choices) from None
        raise UsageError(f"{where} must be {exc}, got {value!r}") from None


def options(raw: Mapping[str, Any], source: str = "command line") -> dict[str, Any]:
    """One value per key (flags or a TOML file's keys), checked and typed; None values are
    left out. ``variant``, ``framework`` and ``data_home`` pass through unchanged."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None:
            continue
        if key in ("variant", "framework", "data_home", "seeds"):
            out[key] = value
        elif key == "activation" and isinstance(value, str) and "," in value:
            out[key] = ",".join(check_option(key, a, source) for a in value.split(","))
        else:
            out[key] = check_option(key, value, source)
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    """The raw keys of a TOML configuration or spec file (UsageError naming the file if it
    cannot be read); a relative data file path is made relative to the TOML file."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{p}: no such spec file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{p}: not a valid TOML spec file ({exc})") from None
    data = raw.get("data")
    suffix = Path(data).suffix.lower() if isinstance(data, str) else ""
    if suffix in (".csv", ".parquet", ".pq") and not Path(str(data)).is_absolute():
        raw["data"] = str((p.parent / str(data)).resolve())
    return raw


@dataclass(frozen=True)
class ModelSpec:
    """An MLP: ``depth`` hidden Dense layers of ``width`` units, then ``outputs`` output units.

    ``norm`` puts a BatchNorm or LayerNorm between each hidden Dense layer and its activation;
    ``residual`` adds each hidden layer's input to ``residual_scale`` times its output wherever the
    two have the same width (every hidden layer but the first). The defaults are the plain MLP.
    """

    depth: int
    width: int
    activation: str
    init: str = "glorot_uniform"
    output_activation: str = "linear"
    norm: str = "none"
    residual: bool = False
    residual_scale: float = 1.0
    outputs: int = 1

    def widths(self, n_inputs: int, n_outputs: int | None = None) -> list[int]:
        """[inputs, hidden..., outputs]."""
        return [n_inputs] + [self.width] * self.depth + [n_outputs or self.outputs]

    @property
    def plain(self) -> bool:
        """True for the plain MLP: no normalisation, no residual connection."""
        return self.norm == "none" and not self.residual

    def validate(self) -> None:
        _choice("activation", self.activation, ACTIVATIONS)
        _choice("init", self.init, INITS)
        _choice("norm", self.norm, NORMS)
        if not isinstance(self.depth, int) or self.depth < 1:
            raise UsageError(f"--depth must be a whole number >= 1, got {self.depth!r}")
        if not isinstance(self.width, int) or self.width < 1:
            raise UsageError(f"--width must be a whole number >= 1, got {self.width!r}")
        if not isinstance(self.residual, bool):
            raise UsageError(f"--residual must be true or false, got {self.residual!r}")
        if not (self.residual_scale > 0 and self.residual_scale < float("inf")):
            raise UsageError(
                f"--residual-scale must be a positive number, got {self.residual_scale!r}"
            )
        if not isinstance(self.outputs, int) or self.outputs < 1:
            raise UsageError(f"outputs must be a whole number >= 1, got {self.outputs!r}")


@dataclass(frozen=True)
class Variant:
    """One network of an experiment, with a name and what it stands for."""

    name: str
    model: ModelSpec
    note: str = ""


@dataclass(frozen=True)
class TrainSpec:
    """How each variant is trained. ``rows``/``batch_size`` of None mean all training rows.

    ``clip_norm``: clip the gradient's global L2 norm to this before each step (None: never).
    ``loss``: ``mse``, ``bce`` (on a sigmoid output) or ``ce`` (softmax cross-entropy on logits).
    """

    optimizer: str
    lr: float
    epochs: int
    loss: str
    batch_size: int | None = None
    rows: int | None = None
    shuffle: bool = True
    seed: int = 0
    clip_norm: float | None = None

    def validate(self) -> None:
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("loss", self.loss, LOSSES)
        if not (self.lr > 0):
            raise UsageError(f"--lr must be a positive number, got {self.lr!r}")
        if self.clip_norm is not None and not (0 < self.clip_norm < float("inf")):
            raise UsageError(
                f"--clip must be a positive number (or 0 for no clipping), got {self.clip_norm!r}"
            )
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise UsageError(f"--epochs must be a whole number >= 1, got {self.epochs!r}")
        for name, v in (("--batch-size", self.batch_size), ("--rows", self.rows)):
            if v is not None and (not isinstance(v, int) or v < 1):
                raise UsageError(f"{name} must be a whole number >= 1 (or 0 for all), got {v!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise UsageError(f"--seed must be a whole number >= 0, got {self.seed!r}")


@dataclass(frozen=True)
class Experiment:
    """A built-in experiment: a dataset, its variants and how they train."""

    name: str
    title: str
    description: str
    dataset: str
    variants: tuple[Variant, ...]
    train: TrainSpec
    default_variants: tuple[str, ...] = ()

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise UnknownChoiceError(f"variant of {self.name}", name, [v.name for v in self.variants])


def _mlp(depth: int, act: str, width: int, out: str = "linear") -> ModelSpec:
    return ModelSpec(depth=depth, width=width, activation=act, output_activation=out)


EXPERIMENTS: dict[str, Experiment] = {
    "california": Experiment(
        name="california",
        title="California Housing: 10-layer sigmoid vs ReLU",
        description=(
            "The seed notebook's regression: 10 x Dense(64) + Dense(1), SGD lr 0.01, mean squared "
            "error, trained for 5 epochs on the whole training split in batches of 32."
        ),
        dataset="california",
        variants=(
            Variant("sigmoid", _mlp(10, "sigmoid", 64), "10 sigmoid layers: vanishing gradients"),
            Variant("relu", _mlp(10, "relu", 64), "10 ReLU layers"),
        ),
        train=TrainSpec(optimizer="sgd", lr=0.01, epochs=5, loss="mse", batch_size=32),
    ),
    "classification": Experiment(
        name="classification",
        title="make_classification: deep sigmoid and its two 'solutions'",
        description=(
            "The seed notebook's 100 points in 2-D: Dense(8) layers + Dense(1, sigmoid), Adam "
            "lr 0.1, binary cross-entropy, batch 32, 30 epochs; the true first-layer gradient of "
            "every step beside the notebook's (W_before - W_after)/lr estimate."
        ),
        dataset="classification",
        variants=(
            Variant("deep-sigmoid", _mlp(8, "sigmoid", 8, "sigmoid"), "8 sigmoid layers"),
            Variant("shallow-sigmoid", _mlp(2, "sigmoid", 8, "sigmoid"), "solution 1: 2 layers"),
            Variant(
                "deep-relu", _mlp(7, "relu", 8, "sigmoid"), "solution 2 as the notebook: 7 ReLU"
            ),
            Variant("deep-relu-8", _mlp(8, "relu", 8, "sigmoid"), "like for like: 8 ReLU layers"),
        ),
        train=TrainSpec(optimizer="adam", lr=0.1, epochs=30, loss="bce", batch_size=32),
    ),
}


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs, resolved and validated; saved as ``config.json``."""

    experiment: str
    variants: tuple[Variant, ...]
    train: TrainSpec
    framework: str = "torch"
    every: int = 1
    data_home: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        variants = tuple(
            Variant(v["name"], ModelSpec(**v["model"]), v.get("note", "")) for v in d["variants"]
        )
        return cls(
            experiment=d["experiment"],
            variants=variants,
            train=TrainSpec(**d["train"]),
            framework=d.get("framework", "torch"),
            every=d.get("every", 1),
            data_home=d.get("data_home"),
            overrides=d.get("overrides", {}),
        )


def _choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UnknownChoiceError(what, value, choices)


def _split(value: str | None) -> list[str]:
    return [s.strip() for s in value.split(",") if s.strip()] if value else []


RUN_FILE_KEYS = (*OPTIONS, "variant", "framework", "data_home", "data")


def resolve(
    experiment: str,
    *,
    variant: str | None = None,
    activation: str | None = None,
    depth: int | None = None,
    width: int | None = None,
    init: str | None = None,
    norm: str | None = None,
    residual: bool | str | None = None,
    residual_scale: float | None = None,
    optimizer: str | None = None,
    lr: float | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    rows: int | None = None,
    clip: float | None = None,
    seed: int | None = None,
    framework: str | None = None,
    every: int | None = None,
    data_home: str | None = None,
    config: str | Path | None = None,
) -> RunConfig:
    """Resolve an experiment's defaults, a TOML ``config`` file and the user's options (which
    override the file) into a validated RunConfig.

    ``variant`` and ``activation`` take comma-separated lists. Model options (activation, depth,
    width, init, norm, residual, residual_scale) apply to every chosen variant, whose name then
    says what changed, e.g. ``sigmoid[depth=20]``; ``activation`` makes one variant per
    activation from the first chosen. ``rows`` or ``batch_size`` of 0 mean all training rows;
    ``clip`` of 0 means no clipping. Every value goes through :data:`OPTIONS`' checks.
    """
    _choice("experiment", experiment, tuple(EXPERIMENTS))
    given = {k: v for k, v in locals().items() if k not in ("experiment", "config")}
    raw: dict[str, Any] = {}
    if config is not None:
        raw = _run_file(config, experiment)
    raw.update({k: v for k, v in given.items() if v is not None})
    o = options(raw, "command line" if config is None else str(config))
    framework = o.get("framework", "torch")
    _choice("framework", framework, FRAMEWORKS)
    exp = EXPERIMENTS[experiment]
    names = _split(o.get("variant")) or [v.name for v in exp.variants]
    chosen = [exp.variant(n) for n in names]
    acts = _split(o.get("activation"))
    if acts:
        base = chosen[0]
        chosen = [
            Variant(a, dataclasses.replace(base.model, activation=a), f"{base.name} with {a}")
            for a in acts
        ]
    model_overrides = {k: o[k] for k in MODEL_KEYS if k != "activation" and k in o}
    if model_overrides:
        tag = ",".join(f"{k}={_show(v)}" for k, v in model_overrides.items())
        chosen = [
            Variant(f"{v.name}[{tag}]", dataclasses.replace(v.model, **model_overrides), v.note)
            for v in chosen
        ]
    for v in chosen:
        v.model.validate()
    train_overrides: dict[str, Any] = {
        k: o[k] for k in ("optimizer", "lr", "epochs", "seed") if k in o
    }
    for k in ("batch_size", "rows"):
        if k in o:
            train_overrides[k] = o[k] or None
    if "clip" in o:
        train_overrides["clip_norm"] = o["clip"] or None
    train = dataclasses.replace(exp.train, **train_overrides)
    train.validate()
    overrides = {**model_overrides, **train_overrides}
    if acts:
        overrides["activation"] = ",".join(acts)
    return RunConfig(
        experiment, tuple(chosen), train, framework, o.get("every", 1), o.get("data_home"),
        overrides,
    )  # fmt: skip


def _show(v: Any) -> str:
    return ("on" if v else "off") if isinstance(v, bool) else str(v)


def _run_file(path: str | Path, experiment: str) -> dict[str, Any]:
    """A run's TOML configuration: one value per key (a sweep's lists are refused)."""
    raw = load_toml(path)
    for key, value in raw.items():
        if key not in RUN_FILE_KEYS:
            raise UsageError(
                f"{path}: key {key!r} is not a run option: expected one of "
                f"{', '.join(RUN_FILE_KEYS)}"
            )
        if isinstance(value, list):
            raise UsageError(
                f"{path}: key {key!r}: got a list {value!r}, expected one value "
                "(lists are for gradprobe sweep)"
            )
    data = raw.pop("data", experiment)
    if data != experiment:
        raise UsageError(f"{path}: key 'data': got {data!r}, expected {experiment!r}")
    return raw
