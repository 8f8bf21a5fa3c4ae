"""Signal-propagation theory at initialisation: predict per-layer gradient norms before training.

Pure numpy (never imports torch or TensorFlow). The mean-field recursion of Poole et al. 2016 and
Schoenholz et al. 2017, layerwise for arbitrary widths with the next layer's fan-out (theory.md
3.3), predicts per-example weight-gradient norms of MLPs to about 1-2%; Gaussian expectations use
the trapezoid rule on a fine grid (closed forms for ReLU).

Example:
    >>> from gradprobe.theory import predict_mlp
    >>> p = predict_mlp([64] * 10 + [10], "relu", "he_normal")
    >>> p.verdict.kind, round(p.chi1, 6)
    ('critical', 1.0)
"""

from __future__ import annotations

from gradprobe.theory.activations import ACTIVATIONS, Activation, get_activation
from gradprobe.theory.factors import (
    batchnorm_gain,
    hanin_beta,
    log_tolerance,
    residual_gain,
    residual_ratio,
    seed_spread,
)
from gradprobe.theory.init import INITS, InitVariances, canonical_init, init_variances
from gradprobe.theory.meanfield import (
    chi1,
    depth_scale,
    fixed_point,
    isometry_ratio,
    jacobian_spectrum_var,
)
from gradprobe.theory.predict import LayerPrediction, MLPPrediction, layer_variances, predict_mlp
from gradprobe.theory.runs import predict_variant
from gradprobe.theory.verdicts import Verdict, verdict

__all__ = [
    "ACTIVATIONS",
    "INITS",
    "Activation",
    "InitVariances",
    "LayerPrediction",
    "MLPPrediction",
    "Verdict",
    "batchnorm_gain",
    "canonical_init",
    "chi1",
    "depth_scale",
    "fixed_point",
    "get_activation",
    "hanin_beta",
    "init_variances",
    "isometry_ratio",
    "jacobian_spectrum_var",
    "layer_variances",
    "log_tolerance",
    "predict_mlp",
    "predict_variant",
    "residual_gain",
    "residual_ratio",
    "seed_spread",
    "verdict",
]
