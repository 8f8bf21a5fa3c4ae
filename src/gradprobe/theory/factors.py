"""Closed-form factors: seed-to-seed spread (Hanin 2018), residual branches, BatchNorm (sec. 7).

Hanin's beta = sum_j 1/n_j over the hidden widths. One He-initialised ReLU layer multiplies
||delta||^2 by a factor of mean 1 and relative variance 5/n, so Var[log ||grad||^2] ~ 5 beta: a
single net's ratio can be off by a factor of about exp(sqrt(5 beta)) (2.4 at width 64, depth 10).
Compare measured log-ratios with the prediction at a tolerance of max(ln 2, 2 sqrt(5 beta)).

Residual block x_{l+1} = x_l + alpha W relu(x_l) with a He-initialised branch: E||delta_l||^2 grows
by (1 + alpha^2 gain) per block, so the first/last ratio is (1 + alpha^2)^{L/2}; alpha = 1/sqrt(L)
keeps it near sqrt(e). BatchNorm without skips, ReLU, large batch: the squared gradient norm grows
by pi/(pi - 1) per layer (norm x 1.211; Yang et al. 2019).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from gradprobe.errors import UnknownChoiceError

BETA_WARN = 0.5


def hanin_beta(hidden_widths: Sequence[int]) -> float:
    """beta = sum_j 1/n_j over the hidden layers.

    Example:
        >>> round(hanin_beta([64] * 9), 4)
        0.1406
    """
    return float(sum(1.0 / n for n in hidden_widths))


def seed_spread(beta: float) -> float:
    """exp(sqrt(5 beta)): the factor by which one net's gradient ratio may leave the prediction.

    Example:
        >>> round(seed_spread(10 / 64), 2)
        2.42
    """
    return math.exp(math.sqrt(5.0 * beta))


def log_tolerance(beta: float) -> float:
    """max(ln 2, 2 sqrt(5 beta)): tolerance for |log measured - log predicted| on one net.

    Example:
        >>> round(log_tolerance(0.01), 4) == round(math.log(2), 4)
        True
    """
    return max(math.log(2.0), 2.0 * math.sqrt(5.0 * beta))


def residual_gain(alpha: float, branch_gain: float = 1.0) -> float:
    """Per-block factor of E||delta||^2 through x + alpha F(x): 1 + alpha^2 * branch_gain.

    ``branch_gain`` is the branch's own chi (1 for a He-initialised ReLU branch).

    Example:
        >>> residual_gain(1.0)
        2.0
    """
    return 1.0 + alpha * alpha * branch_gain


def residual_ratio(alpha: float, n_blocks: int, branch_gain: float = 1.0) -> float:
    """First/last backward-signal ratio of a residual stack: (1 + alpha^2 gain)^{L/2}.

    Example (theory.md section 7: 1024 for alpha = 1, 1.63 for alpha = 1/sqrt(L), L = 20):
        >>> residual_ratio(1.0, 20), round(residual_ratio(20 ** -0.5, 20), 2)
        (1024.0, 1.63)
    """
    return residual_gain(alpha, branch_gain) ** (n_blocks / 2)


def batchnorm_gain(activation: str = "relu") -> float:
    """Per-layer growth of the squared gradient norm in a BatchNorm net without skips.

    Known for ReLU at large batch: pi/(pi - 1) = 1.467 (norm x 1.211).

    Example:
        >>> round(batchnorm_gain() ** 0.5, 4)
        1.2112
    """
    if activation.lower() != "relu":
        raise UnknownChoiceError("BatchNorm activation (rate known only for)", activation, ["relu"])
    return math.pi / (math.pi - 1.0)
