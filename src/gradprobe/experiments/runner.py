"""Run an experiment: train each variant, write the run directory, summarise.

The runner is framework-neutral: it asks the chosen backend (``torch`` now) to train each
variant and writes what comes back, as it comes back, so an interruption loses nothing.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import platform
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from gradprobe import __version__
from gradprobe.diagnosis import Finding, brief, diagnose, verdict
from gradprobe.errors import MissingExtraError, UnknownChoiceError, UsageError
from gradprobe.experiments import data as datasets
from gradprobe.experiments.spec import EXPERIMENTS, RunConfig
from gradprobe.records import grad_norm_by_depth, write_table
from gradprobe.run import Run, load_run, variant_dir, write_json
from gradprobe.views.story import closing_sentence, final_by_seed, watched_epochs


class Progress(Protocol):
    """What the runner tells whoever shows progress (the CLI's bar; nothing by default)."""

    def start(self, variant: str, total_steps: int) -> None: ...
    def advance(self, step: int, loss: float) -> None: ...


class _Silent:
    def start(self, variant: str, total_steps: int) -> None:
        pass

    def advance(self, step: int, loss: float) -> None:
        pass


@dataclass
class RunOutcome:
    run: Run
    status: str
    message: str
    findings: list[Finding]


BACKENDS = {
    "torch": ("gradprobe.experiments.torch_backend", "torch"),
    "keras": ("gradprobe.experiments.keras_backend", "keras"),
}


def load_backend(framework: str) -> Any:
    """The module that trains variants with ``framework``: it has ``train(...) -> Outcome``."""
    if framework not in BACKENDS:
        raise UnknownChoiceError("framework", framework, BACKENDS)
    module, extra = BACKENDS[framework]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise UsageError(f"--framework {framework} is not available in this version") from None
        raise MissingExtraError(str(exc.name), extra, f"--framework {framework}") from exc


def default_run_dir(experiment: str, root: str | Path = "runs") -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(root) / f"{experiment}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = Path(root) / f"{experiment}-{stamp}-{n}"
    return path


def load_dataset(config: RunConfig) -> datasets.Dataset:
    name = EXPERIMENTS[config.experiment].dataset
    if name == "california":
        return datasets.california(config.data_home)
    return datasets.classification()


def environment(framework: str = "torch") -> dict[str, Any]:
    """Versions and time; imports only the framework the run uses."""
    env: dict[str, Any] = {
        "gradprobe": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if framework == "torch":
        import torch

        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
    elif framework == "keras":
        import keras

        env["keras"] = keras.__version__
        env["keras_backend"] = keras.backend.backend()
    return env


def describe(data: datasets.Dataset, config: RunConfig) -> dict[str, Any]:
    """What theory needs to know of the data (sizes, the inputs' second moment a^0) and what a
    network that learned nothing scores: ``baseline_test_loss`` (the mean predictor's test MSE,
    or the constant predictor's cross-entropy) and ``chance_test_accuracy`` (the majority
    class's share of the test set; classification only)."""
    rows = data.x_train[: config.train.rows or len(data.x_train)]
    y_train = data.y_train[: len(rows)].astype(np.float64)
    y_test = data.y_test.astype(np.float64)
    out: dict[str, Any] = {
        "name": data.name,
        "task": data.task,
        "n_features": data.n_features,
        "n_train": int(len(data.x_train)),
        "n_test": int(len(data.x_test)),
        "rows_used": int(len(rows)),
        "input_second_moment": float(np.mean(np.square(rows, dtype=np.float64))),
    }
    if config.train.loss == "mse":
        out["baseline_test_loss"] = float(np.mean((y_test - y_train.mean()) ** 2))
    elif config.train.loss == "bce":
        p = float(np.clip(y_train.mean(), 1e-7, 1 - 1e-7))
        out["baseline_test_loss"] = float(
            -np.mean(y_test * math.log(p) + (1 - y_test) * math.log(1 - p))
        )
        out["chance_test_accuracy"] = float(max(y_test.mean(), 1 - y_test.mean()))
    return out


def _steps_per_epoch(config: RunConfig, data: datasets.Dataset) -> int:
    rows = min(config.train.rows or len(data.x_train), len(data.x_train))
    batch = config.train.batch_size or rows
    return math.ceil(rows / batch)


DEFAULT_SEEDS = {"classification": 5}
"""Seeds per variant by default: where one seed can mislead (100 points: the deep sigmoid net
sometimes escapes chance), the outcome is shown over several."""

RECORDS_PER_VARIANT = 120
"""With ``every`` chosen by :func:`auto_every`, at most about this many recorded steps."""


def auto_every(config: RunConfig, data: datasets.Dataset) -> int:
    """Record every N-th step, N as small as keeps a variant within RECORDS_PER_VARIANT recorded
    steps, and a divisor of the steps per epoch where one fits, so every epoch's first step is
    recorded (the one-line-per-epoch charts show it)."""
    per_epoch = _steps_per_epoch(config, data)
    total = per_epoch * config.train.epochs
    if total <= RECORDS_PER_VARIANT:
        return 1
    for d in range(1, per_epoch + 1):
        if per_epoch % d == 0 and math.ceil(total / d) <= RECORDS_PER_VARIANT:
            return d
    return math.ceil(total / RECORDS_PER_VARIANT)


def run_experiment(
    config: RunConfig,
    out_dir: Path,
    *,
    progress: Progress | None = None,
    data: datasets.Dataset | None = None,
    seeds: int | None = None,
) -> RunOutcome:
    """Train every variant of ``config`` and write ``out_dir``; returns the loaded run.

    Each variant trains watched from ``config.train.seed``; with ``seeds`` > 1 (default
    :data:`DEFAULT_SEEDS` of the experiment, else 1) it also trains unwatched from the next
    seeds, whose per-epoch outcome lands in ``epochs.parquet`` beside the watched seed's (column
    ``seed``; epoch -1 is before training). Extra seeds need the torch backend.
    """
    backend = load_backend(config.framework)

    progress = progress or _Silent()
    data = data if data is not None else load_dataset(config)
    n_seeds = DEFAULT_SEEDS.get(config.experiment, 1) if seeds is None else seeds
    if not isinstance(n_seeds, int) or n_seeds < 1:
        raise UsageError(f"--seeds must be a whole number >= 1, got {n_seeds!r}")
    if config.framework != "torch":
        n_seeds = 1
    seed_list = [config.train.seed + i for i in range(n_seeds)]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(
        out_dir / "config.json",
        {
            **config.to_dict(),
            "seeds": seed_list,
            "environment": environment(config.framework),
            "data": describe(data, config),
        },
    )
    write_json(out_dir / "status.json", {"status": "running", "message": ""})
    extra: dict[str, list[pd.DataFrame]] = {"steps": [], "epochs": [], "firstlayer": []}
    status, message = "complete", ""
    per_epoch = _steps_per_epoch(config, data)
    for variant in config.variants:
        progress.start(variant.name, per_epoch * config.train.epochs)
        t0 = time.perf_counter()
        outcome = backend.train(
            variant,
            data,
            config.train,
            every=config.every,
            log_dir=out_dir / "records" / variant_dir(variant.name),
            on_step=progress.advance,
        )
        wall = time.perf_counter() - t0
        epoch_rows = [_seeded(outcome, config.train.seed, wall)]
        if outcome.status == "complete" and len(seed_list) > 1:
            try:
                epoch_rows += _extra_seeds(backend, variant, data, config, seed_list[1:])
            except KeyboardInterrupt:
                outcome.status = "interrupted"
                outcome.message = "interrupted by the user while training the extra seeds"
        for name in extra:
            if name == "epochs":
                frame = pd.DataFrame([r for rows in epoch_rows for r in rows])
            else:
                frame = pd.DataFrame(getattr(outcome, name))
            frame.insert(0, "variant", variant.name)
            extra[name].append(frame)
            write_table(pd.concat(extra[name], ignore_index=True), out_dir / f"{name}.parquet")
        if outcome.status != "complete":
            status = "partial"
            message = f"{variant.name}: {outcome.message}"
            if outcome.status == "non_finite":
                message += _first_nonfinite(outcome.monitor.to_pandas())
            break
    write_json(out_dir / "status.json", {"status": status, "message": message})
    run = load_run(out_dir)
    findings = diagnose(run)
    write_json(out_dir / "summary.json", summarise(run, findings))
    # the run as load_run(out_dir) would give it now: the summary read back from its file
    run = dataclasses.replace(run, summary=json.loads((out_dir / "summary.json").read_text()))
    return RunOutcome(run, status, message, findings)


def _extra_seeds(
    backend: Any, variant: Any, data: datasets.Dataset, config: RunConfig, seeds: list[int]
) -> list[list[dict[str, Any]]]:
    """Per-epoch rows of ``variant`` trained unwatched from each of ``seeds``: all at once as one
    stacked model (:func:`gradprobe.lab.batched.train_seeds`, same numbers as one by one) where
    the model allows it, else one after the other."""
    if variant.model.norm == "none":
        import torch

        from gradprobe.lab.batched import train_seeds

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            res = train_seeds(variant.model, data, config.train, seeds, every=10**9)
        finally:
            torch.set_num_threads(threads)
        each = res.wall_s / len(seeds)
        frame = res.epochs.assign(wall_time_s=each)
        return [frame[frame["seed"] == s].to_dict("records") for s in seeds]
    rows = []
    for seed in seeds:
        t0 = time.perf_counter()
        train = dataclasses.replace(config.train, seed=seed)
        more = backend.train(variant, data, train, watched=False)
        rows.append(_seeded(more, seed, time.perf_counter() - t0))
    return rows


def _seeded(outcome: Any, seed: int, wall: float) -> list[dict[str, Any]]:
    """The outcome's per-epoch rows (the start first), tagged with the seed and wall time."""
    rows = ([outcome.start] if outcome.start else []) + list(outcome.epochs)
    return [{**r, "seed": seed, "wall_time_s": wall} for r in rows]


def _first_nonfinite(params: pd.DataFrame) -> str:
    bad = params[(params["grad_nonfinite"] > 0) | ~np.isfinite(params["grad_norm"])]
    if bad.empty:
        return "; no non-finite gradient was recorded (the step was not a recorded one)"
    first = bad[bad["step"] == bad["step"].min()].sort_values("depth", ascending=False).iloc[0]
    return (
        f"; non-finite gradients first at step {int(first['step'])}, layer '{first['layer']}' "
        f"(depth {int(first['depth'])}, nearest the output, where backprop starts)"
    )


def summarise(run: Run, findings: list[Finding] | None = None) -> dict[str, Any]:
    """The summary object of a run (what ``gradprobe run --json`` prints), with each variant's
    verdict and findings (code, severity, layers) from :func:`gradprobe.diagnosis.diagnose`."""
    findings = diagnose(run) if findings is None else findings
    variants = []
    watched = watched_epochs(run)
    params, steps = run.table("params"), run.table("steps")
    first = run.table("firstlayer")
    for name in run.variants:
        norms = grad_norm_by_depth(params[params["variant"] == name])
        ratio = float(norms[0] / norms[-1]) if len(norms) and norms[-1] > 0 else math.nan
        item: dict[str, Any] = {
            "name": name,
            "final_loss": _last(steps, name, "loss"),
            "grad_norm_by_depth": [float(v) for v in norms],
            "first_last_ratio": ratio,
            "verdict": verdict([f for f in findings if f.variant == name]),
            "findings": brief(f for f in findings if f.variant == name),
        }
        for col in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
            v = _last(watched, name, col)
            if not math.isnan(v):
                item[col] = v
        finals = final_by_seed(run, name)
        if len(finals) > 1:
            item["seeds"] = {
                col: [float(v) for v in finals[col]]
                for col in ("seed", "test_loss", "test_accuracy")
                if col in finals and finals[col].notna().any()
            }
        if run.config.get("experiment") == "classification" and "true_mean_abs_grad" in first:
            f = first[first["variant"] == name]
            if len(f):
                item["first_layer_true_mean_abs_grad"] = float(f["true_mean_abs_grad"].iloc[0])
                item["notebook_estimate_mean_abs"] = float(
                    f["cumulative_estimate_mean_abs"].iloc[-1]
                )
        variants.append(item)
    return {
        "experiment": run.config.get("experiment"),
        "story": closing_sentence(run),
        "status": run.status.get("status"),
        "message": run.status.get("message", ""),
        "run_dir": str(run.path),
        "variants": variants,
    }


def _last(frame: pd.DataFrame, variant: str, col: str) -> float:
    if frame.empty or col not in frame:
        return math.nan
    f = frame[frame["variant"] == variant]
    return float(f[col].iloc[-1]) if len(f) else math.nan
