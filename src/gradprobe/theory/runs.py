"""The prediction for a recorded run: read the architecture and data from its config.

A run directory's ``config.json`` holds each variant's model (depth, width, activation, init,
normalisation, residual), the training loss (``mse``, ``bce`` or ``ce``; softmax cross-entropy
couples delta^L to the readout's weights) and, under ``data``, the number of input features and
the inputs' second moment a^0. Plain MLPs are predicted; normalised or residual ones are not
(returns None).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from gradprobe.errors import GradprobeError
from gradprobe.theory.predict import MLPPrediction, predict_mlp


def predict_variant(config: Mapping[str, Any], variant: str) -> MLPPrediction | None:
    """The mean-field prediction for ``variant`` of a run's ``config``, or None where the
    theory does not apply (no model spec, normalisation or residual layers, an activation or
    initialisation the theory does not know).

    Example:
        >>> cfg = {"variants": [{"name": "s", "model": {"depth": 9, "width": 64,
        ...         "activation": "sigmoid", "init": "glorot_uniform", "outputs": 10}}],
        ...        "data": {"n_features": 64, "input_second_moment": 1.0}}
        >>> f"{predict_variant(cfg, 's').grad_norm_by_depth[0]:.3g}"
        '5.2e-06'
        >>> cfg["train"] = {"loss": "mse"}
        >>> p = predict_variant(cfg, "s")
        >>> p.loss, f"{p.grad_norm_by_depth[0]:.3g}"
        ('mse', '5.32e-06')
    """
    spec = next(
        (v.get("model") for v in config.get("variants", []) if v.get("name") == variant), None
    )
    data = config.get("data") or {}
    if not spec or "n_features" not in data:
        return None
    if spec.get("norm", "none") != "none" or spec.get("residual", False):
        return None
    widths = [data["n_features"]] + [spec["width"]] * spec["depth"] + [spec.get("outputs", 1)]
    try:
        return _predict(
            tuple(widths),
            spec["activation"],
            spec["init"],
            float(data.get("input_second_moment", 1.0)),
            (config.get("train") or {}).get("loss"),
        )
    except (GradprobeError, ValueError, KeyError, TypeError):
        return None


@lru_cache(maxsize=256)
def _predict(
    widths: tuple[int, ...], activation: str, init: str, second_moment: float, loss: str | None
) -> MLPPrediction:
    """One prediction per net (diagnosis and report ask for the same net many times); the
    prediction is frozen, so callers share it."""
    return predict_mlp(list(widths), activation, init, input_second_moment=second_moment, loss=loss)
