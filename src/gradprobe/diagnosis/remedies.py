"""The one remedy catalogue: what ``diagnose`` advises and what ``gradprobe remedies`` and
``gradprobe sweep`` try, under the same names.

Each :class:`Entry` says why the remedy helps (``why``, shown beside a finding), what it is in a
few words (``what``), and, when it is a change of configuration the lab can train, that change
(``trial``: sweep keys; ``lr_factor`` scales the learning rate, ``depth_factor`` the depth).
Remedies without a trial (``find_nan``, ``check_loss`` ...) are advice only. Old names users may
have typed (``normalisation``, ``clip_gradients``) are accepted through :data:`ALIASES`.

Example:
    >>> [r.name for r in for_vanishing(("sigmoid",), backward_only=False)][:2]
    ['tanh', 'relu_he']
    >>> canonical("clip_gradients")
    'clip'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gradprobe.diagnosis.finding import Remedy
from gradprobe.errors import UnknownChoiceError

SATURATING = {"sigmoid", "tanh", "softsign", "hardsigmoid", "hardtanh"}


@dataclass(frozen=True)
class Entry:
    """One remedy: ``why`` it helps, ``what`` it is, and the configuration ``trial`` (or None)."""

    name: str
    what: str
    why: str
    trial: dict[str, Any] | None = field(default=None)


def _e(name: str, what: str, why: str, trial: dict[str, Any] | None = None) -> Entry:
    return Entry(name, what, why, trial)


HE_LR = (
    "He init keeps the forward signal's scale too (Glorot's ReLU net shrinks it x0.71 per "
    "layer), so the same learning rate takes larger steps: lower it 10x with the switch (the "
    "lab trains it so) and clip inputs far from the rest. California Housing, 10x64 ReLU, SGD: "
    "lr 0.01 diverges in 3 of 3 seeds (features up to 119 standard deviations out), lr 0.001 "
    "trains, as does lr 0.01 with the inputs clipped to +-5."
)

ENTRIES: tuple[Entry, ...] = (
    _e("baseline", "the configuration as it is", "The reference the remedies are compared to.", {}),
    _e(
        "relu_he",
        "ReLU with He init, learning rate / 10",
        "Use ReLU (or GELU/SiLU) with He initialisation (Var W = 2/fan_in): each layer then "
        "passes the backward signal on with gain chi_1 = 1 instead of shrinking it (sigmoid "
        "with Glorot init has chi_1 = 0.056: x0.24 per layer). " + HE_LR,
        {"activation": "relu", "init": "he_uniform", "lr_factor": 0.1},
    ),
    _e(
        "he_init",
        "He init, same activation, learning rate / 10",
        "Switch to He initialisation (Var W = 2/fan_in) for ReLU layers: Glorot's 1/fan_avg "
        "halves ||dL/dh||^2 at every ReLU layer (x0.71 in norm per layer). " + HE_LR,
        {"init": "he_normal", "lr_factor": 0.1},
    ),
    _e(
        "tanh",
        "tanh with Glorot init",
        "Use tanh instead of sigmoid: zero-centred, with slope 1 at 0 (sigmoid's is 0.25), so "
        "the backward gain per layer stays near 1 at Glorot init (chi_1 = 1, critical); "
        "bounded, it needs no lower learning rate when inputs lie far out.",
        {"activation": "tanh", "init": "glorot_uniform"},
    ),
    _e(
        "leaky_relu",
        "LeakyReLU with He init, learning rate / 10",
        "Use LeakyReLU/ELU/GELU: their negative side still passes a gradient, so a silent unit "
        "can come back. " + HE_LR,
        {"activation": "leaky_relu", "init": "he_uniform", "lr_factor": 0.1},
    ),
    _e(
        "gelu",
        "GELU with He init, learning rate / 10",
        "Use GELU with He initialisation: a smooth ReLU whose gain per layer stays near 1. "
        + HE_LR,
        {"activation": "gelu", "init": "he_uniform", "lr_factor": 0.1},
    ),
    _e(
        "selu",
        "SELU with LeCun normal init",
        "Use SELU with LeCun normal init: self-normalising, it pulls activations towards mean 0 "
        "and variance 1 layer after layer.",
        {"activation": "selu", "init": "lecun_normal"},
    ),
    _e(
        "batch_norm",
        "BatchNorm before each activation",
        "Add BatchNorm (or LayerNorm: remedy layer_norm) before each activation: it re-centres "
        "and re-scales the pre-activations, keeping sigmoid/tanh in their steep middle and the "
        "gain near 1.",
        {"norm": "batch"},
    ),
    _e(
        "layer_norm",
        "LayerNorm before each activation",
        "Add LayerNorm before each activation: like BatchNorm per example, so it does not depend "
        "on the batch size.",
        {"norm": "layer"},
    ),
    _e(
        "residual",
        "residual connections",
        "Add residual (skip) connections x + F(x): the identity path carries the gradient "
        "past every block unchanged, whatever each block does to it.",
        {"residual": True, "residual_scale": 1.0},
    ),
    _e(
        "residual_scaled",
        "residual connections, branch x0.5",
        "Add residual connections with the branch scaled down (x + 0.5 F(x)): the identity path "
        "carries the gradient and the sum grows more slowly with depth.",
        {"residual": True, "residual_scale": 0.5},
    ),
    _e(
        "shallower",
        "a quarter of the depth",
        "Use fewer layers: the loss of signal compounds per layer, so halving the depth takes "
        "the square root of the first/last ratio.",
        {"depth_factor": 0.25},
    ),
    _e(
        "adam",
        "Adam, lr 1e-3",
        "Use an adaptive optimizer (Adam/RMSprop): it divides each step by the gradient's "
        "running RMS, so layers whose gradients are small still move -- a workaround, the "
        "signal itself still vanishes.",
        {"optimizer": "adam", "lr": 0.001},
    ),
    _e(
        "clip",
        "gradient clipping at norm 1",
        "Clip the gradient norm (torch.nn.utils.clip_grad_norm_): it bounds the step while "
        "you fix the cause; it does not make the layers agree.",
        {"clip": 1.0},
    ),
    _e(
        "lower_lr",
        "learning rate / 10",
        "Lower the learning rate (e.g. 10x): each step then changes weights by a smaller share "
        "of their size, the update/weight ratio near 1e-3 that trains steadily.",
        {"lr_factor": 0.1},
    ),
    _e(
        "raise_lr",
        "learning rate x 10",
        "Raise the learning rate (e.g. 10x) or use Adam: updates of less than 1e-5 of the "
        "weights' size per step leave the layer where it started.",
        {"lr_factor": 10.0},
    ),
    _e(
        "smaller_init",
        "smaller initial weights",
        "Draw smaller initial weights (Glorot/He rather than a large std): the backward gain "
        "per layer is sigma_w^2 E[phi'^2]; above 1 it compounds into explosion.",
    ),
    _e(
        "find_nan",
        "find the first non-finite value",
        "Find the first non-finite value: run with torch.autograd.set_detect_anomaly(True) "
        "for a step, check inputs and targets for NaN/inf, and log/sqrt/div for 0 or negatives.",
    ),
    _e(
        "negative_bias",
        "biases at 0, lower learning rate",
        "Initialise biases at 0 (or a small positive value for ReLU) and lower the learning "
        "rate: a large negative bias or one big step pushes all pre-activations below 0, and a "
        "unit that never fires gets no gradient to recover.",
    ),
    _e(
        "input_scaling",
        "standardised inputs",
        "Standardise the inputs (zero mean, unit variance): large inputs drive the first "
        "layers into saturation and make every gradient scale off.",
    ),
    _e(
        "loss_scale",
        "let the loss scaler work",
        "Nothing to do for an occasional skip: the loss scaler lowers its scale and retries. "
        "If it skips most steps, the unscaled gradients overflow or are NaN: find the first "
        "non-finite value, lower the learning rate, or train in bf16 or float32.",
    ),
    _e(
        "check_loss",
        "check the loss and its mask",
        "Check the loss: a batch whose labels are all masked (ignore_index, a zero mask), a "
        "loss multiplied by 0, or an output cut from the graph (.detach(), .item(), no_grad) "
        "gives gradients that are exactly 0; skip such batches or fix the mask.",
    ),
)
CATALOGUE: dict[str, Entry] = {e.name: e for e in ENTRIES}
CATALOG = {e.name: e.why for e in ENTRIES}  # name -> why (kept for older imports)
ALIASES = {
    "normalisation": "batch_norm",
    "normalization": "batch_norm",
    "clip_gradients": "clip",
    "clip_grad_norm": "clip",
}
TRIALS: tuple[str, ...] = tuple(e.name for e in ENTRIES if e.trial is not None)
"""The remedies the lab can train (baseline first), in catalogue order."""


def canonical(name: str, *, trial: bool = False) -> str:
    """The catalogue name of ``name`` (an alias is accepted); UnknownChoiceError otherwise.
    With ``trial``, only remedies the lab can train are valid."""
    n = ALIASES.get(name, name)
    valid = TRIALS if trial else tuple(CATALOGUE)
    if n not in valid:
        raise UnknownChoiceError("remedy", name, valid)
    return n


def remedies(*names: str) -> tuple[Remedy, ...]:
    """Remedies by name, in the order given."""
    return tuple(Remedy(n, CATALOGUE[canonical(n)].why) for n in names)


def _saturating(acts: tuple[str, ...]) -> bool:
    return any(a in SATURATING for a in acts)


def for_vanishing(acts: tuple[str, ...], backward_only: bool) -> tuple[Remedy, ...]:
    """Best first, as the lab ranks them on California's sigmoid net (SGD lr 0.01, 3 seeds):
    tanh 0.354, batch_norm 0.402, adam 0.409, relu_he 0.436, residual_scaled 0.50; residual
    (unscaled) diverged in 2 of 3 seeds, so the scaled branch is advised."""
    if backward_only:
        return remedies("he_init", "batch_norm", "residual_scaled")
    if _saturating(acts):
        tanh = ("tanh",) if "tanh" not in acts else ()
        return remedies(*tanh, "relu_he", "batch_norm", "residual_scaled", "shallower", "adam")
    return remedies("he_init", "residual_scaled", "batch_norm", "shallower", "adam")


def for_exploding(acts: tuple[str, ...]) -> tuple[Remedy, ...]:
    return remedies("smaller_init", "batch_norm", "clip", "lower_lr")


def for_non_finite() -> tuple[Remedy, ...]:
    return remedies("find_nan", "lower_lr", "clip", "input_scaling")


def for_saturation(acts: tuple[str, ...]) -> tuple[Remedy, ...]:
    return remedies("smaller_init", "input_scaling", "batch_norm", "relu_he")


def for_dead_units() -> tuple[Remedy, ...]:
    return remedies("negative_bias", "leaky_relu", "he_init", "lower_lr")


def for_stalled(vanishing: bool) -> tuple[Remedy, ...]:
    if vanishing:
        return remedies("relu_he", "batch_norm", "adam", "raise_lr")
    return remedies("raise_lr", "adam")


def for_update_too_large() -> tuple[Remedy, ...]:
    return remedies("lower_lr", "clip")


def for_skipped(persistent: bool) -> tuple[Remedy, ...]:
    if persistent:
        return remedies("loss_scale", "find_nan", "lower_lr")
    return remedies("loss_scale")


def for_zero_gradients() -> tuple[Remedy, ...]:
    return remedies("check_loss")
