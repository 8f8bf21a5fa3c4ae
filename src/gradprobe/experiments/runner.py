"""Run an experiment: train each variant, write the run directory, summarise.

The runner is framework-neutral: it asks the chosen backend (``torch`` now) to train each
variant and writes what comes back, as it comes back, so an interruption loses nothing.
"""

from __future__ import annotations

import importlib
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
    """What theory needs to know of the data: sizes and the inputs' second moment a^0."""
    rows = data.x_train[: config.train.rows or len(data.x_train)]
    return {
        "name": data.name,
        "task": data.task,
        "n_features": data.n_features,
        "n_train": int(len(data.x_train)),
        "n_test": int(len(data.x_test)),
        "rows_used": int(len(rows)),
        "input_second_moment": float(np.mean(np.square(rows, dtype=np.float64))),
    }


def _steps_per_epoch(config: RunConfig, data: datasets.Dataset) -> int:
    rows = min(config.train.rows or len(data.x_train), len(data.x_train))
    batch = config.train.batch_size or rows
    return math.ceil(rows / batch)


def run_experiment(
    config: RunConfig,
    out_dir: Path,
    *,
    progress: Progress | None = None,
    data: datasets.Dataset | None = None,
) -> RunOutcome:
    """Train every variant of ``config`` and write ``out_dir``; returns the loaded run."""
    backend = load_backend(config.framework)

    progress = progress or _Silent()
    data = data if data is not None else load_dataset(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(
        out_dir / "config.json",
        {
            **config.to_dict(),
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
        for name in extra:
            rows = getattr(outcome, name)
            frame = pd.DataFrame(rows)
            frame.insert(0, "variant", variant.name)
            if name == "epochs":
                frame["wall_time_s"] = wall
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
    return RunOutcome(load_run(out_dir), status, message, findings)


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
    params, steps, epochs = run.table("params"), run.table("steps"), run.table("epochs")
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
            v = _last(epochs, name, col)
            if not math.isnan(v):
                item[col] = v
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
