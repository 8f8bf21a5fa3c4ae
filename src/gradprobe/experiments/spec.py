"""Typed, validated configuration of the built-in experiments (no framework needed).

A :class:`RunConfig` is resolved once from an experiment's defaults and the user's options,
validated with messages that list the valid values, and saved as ``config.json`` in every run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from gradprobe.errors import UnknownChoiceError, UsageError
from gradprobe.experiments.init import INITS

ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu", "gelu", "silu", "linear")
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "rmsprop")
LOSSES = ("mse", "bce", "ce")
NORMS = ("none", "batch", "layer")
FRAMEWORKS = ("torch", "keras")


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


def resolve(
    experiment: str,
    *,
    variant: str | None = None,
    activation: str | None = None,
    depth: int | None = None,
    width: int | None = None,
    init: str | None = None,
    optimizer: str | None = None,
    lr: float | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    rows: int | None = None,
    seed: int | None = None,
    framework: str = "torch",
    every: int = 1,
    data_home: str | None = None,
) -> RunConfig:
    """Resolve an experiment's defaults and the user's options into a validated RunConfig.

    ``variant`` and ``activation`` take comma-separated lists. Model options (activation, depth,
    width, init) apply to every chosen variant, whose name then says what changed, e.g.
    ``sigmoid[depth=20]``; ``activation`` makes one variant per activation from the first chosen.
    ``rows`` or ``batch_size`` of 0 mean all training rows.
    """
    _choice("experiment", experiment, tuple(EXPERIMENTS))
    _choice("framework", framework, FRAMEWORKS)
    exp = EXPERIMENTS[experiment]
    names = _split(variant) or [v.name for v in exp.variants]
    chosen = [exp.variant(n) for n in names]
    acts = _split(activation)
    for a in acts:
        _choice("activation", a, ACTIVATIONS)
    if acts:
        base = chosen[0]
        chosen = [
            Variant(a, dataclasses.replace(base.model, activation=a), f"{base.name} with {a}")
            for a in acts
        ]
    model_overrides = {
        k: v for k, v in (("depth", depth), ("width", width), ("init", init)) if v is not None
    }
    if model_overrides:
        tag = ",".join(f"{k}={v}" for k, v in model_overrides.items())
        chosen = [
            Variant(f"{v.name}[{tag}]", dataclasses.replace(v.model, **model_overrides), v.note)
            for v in chosen
        ]
    for v in chosen:
        v.model.validate()
    train_overrides: dict[str, Any] = {
        k: v
        for k, v in (("optimizer", optimizer), ("lr", lr), ("epochs", epochs), ("seed", seed))
        if v is not None
    }
    if batch_size is not None:
        train_overrides["batch_size"] = batch_size or None
    if rows is not None:
        train_overrides["rows"] = rows or None
    train = dataclasses.replace(exp.train, **train_overrides)
    train.validate()
    if not isinstance(every, int) or every < 1:
        raise UsageError(f"--every must be a whole number >= 1, got {every!r}")
    overrides = {**model_overrides, **train_overrides}
    if acts:
        overrides["activation"] = ",".join(acts)
    return RunConfig(experiment, tuple(chosen), train, framework, every, data_home, overrides)
