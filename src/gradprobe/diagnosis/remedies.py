"""The remedies, each with why it helps, ranked per case by small pure functions.

Example:
    >>> [r.name for r in for_vanishing(("sigmoid",), backward_only=False)][:2]
    ['relu_he', 'normalisation']
"""

from __future__ import annotations

from gradprobe.diagnosis.finding import Remedy

SATURATING = {"sigmoid", "tanh", "softsign", "hardsigmoid", "hardtanh"}

CATALOG = {
    "relu_he": (
        "Use ReLU (or GELU/SiLU) with He initialisation (Var W = 2/fan_in): each layer then "
        "passes the backward signal on with gain chi_1 = 1 instead of shrinking it (sigmoid "
        "with Glorot init has chi_1 = 0.056: x0.24 per layer)."
    ),
    "he_init": (
        "Switch to He initialisation (Var W = 2/fan_in) for ReLU layers: Glorot's 1/fan_avg "
        "halves ||dL/dh||^2 at every ReLU layer (x0.71 in norm per layer)."
    ),
    "normalisation": (
        "Add BatchNorm or LayerNorm before each activation: it re-centres and re-scales the "
        "pre-activations, keeping sigmoid/tanh in their steep middle and the gain near 1."
    ),
    "residual": (
        "Add residual (skip) connections x + F(x): the identity path carries the gradient "
        "past every block unchanged, whatever each block does to it."
    ),
    "shallower": (
        "Use fewer layers: the loss of signal compounds per layer, so halving the depth takes "
        "the square root of the first/last ratio."
    ),
    "smaller_init": (
        "Draw smaller initial weights (Glorot/He rather than a large std): the backward gain "
        "per layer is sigma_w^2 E[phi'^2]; above 1 it compounds into explosion."
    ),
    "clip_gradients": (
        "Clip the gradient norm (torch.nn.utils.clip_grad_norm_): it bounds the step while "
        "you fix the cause; it does not make the layers agree."
    ),
    "lower_lr": (
        "Lower the learning rate (e.g. 10x): each step then changes weights by a smaller share "
        "of their size, the update/weight ratio near 1e-3 that trains steadily."
    ),
    "raise_lr": (
        "Raise the learning rate (e.g. 10x) or use Adam: updates of less than 1e-5 of the "
        "weights' size per step leave the layer where it started."
    ),
    "adam": (
        "Use an adaptive optimizer (Adam/RMSprop): it divides each step by the gradient's "
        "running RMS, so layers whose gradients are small still move -- a workaround, the "
        "signal itself still vanishes."
    ),
    "find_nan": (
        "Find the first non-finite value: run with torch.autograd.set_detect_anomaly(True) "
        "for a step, check inputs and targets for NaN/inf, and log/sqrt/div for 0 or negatives."
    ),
    "negative_bias": (
        "Initialise biases at 0 (or a small positive value for ReLU) and lower the learning "
        "rate: a large negative bias or one big step pushes all pre-activations below 0, and a "
        "unit that never fires gets no gradient to recover."
    ),
    "leaky_relu": (
        "Use LeakyReLU/ELU/GELU: their negative side still passes a gradient, so a silent unit "
        "can come back."
    ),
    "input_scaling": (
        "Standardise the inputs (zero mean, unit variance): large inputs drive the first "
        "layers into saturation and make every gradient scale off."
    ),
    "loss_scale": (
        "Nothing to do for an occasional skip: the loss scaler lowers its scale and retries. "
        "If it skips most steps, the unscaled gradients overflow or are NaN: find the first "
        "non-finite value, lower the learning rate, or train in bf16 or float32."
    ),
    "check_loss": (
        "Check the loss: a batch whose labels are all masked (ignore_index, a zero mask), a "
        "loss multiplied by 0, or an output cut from the graph (.detach(), .item(), no_grad) "
        "gives gradients that are exactly 0; skip such batches or fix the mask."
    ),
}


def remedies(*names: str) -> tuple[Remedy, ...]:
    """Remedies by name, in the order given."""
    return tuple(Remedy(n, CATALOG[n]) for n in names)


def _saturating(acts: tuple[str, ...]) -> bool:
    return any(a in SATURATING for a in acts)


def for_vanishing(acts: tuple[str, ...], backward_only: bool) -> tuple[Remedy, ...]:
    if backward_only:
        return remedies("he_init", "normalisation", "residual")
    if _saturating(acts):
        return remedies("relu_he", "normalisation", "residual", "shallower", "adam")
    return remedies("he_init", "residual", "normalisation", "shallower", "adam")


def for_exploding(acts: tuple[str, ...]) -> tuple[Remedy, ...]:
    return remedies("smaller_init", "normalisation", "clip_gradients", "lower_lr")


def for_non_finite() -> tuple[Remedy, ...]:
    return remedies("find_nan", "lower_lr", "clip_gradients", "input_scaling")


def for_saturation(acts: tuple[str, ...]) -> tuple[Remedy, ...]:
    return remedies("smaller_init", "input_scaling", "normalisation", "relu_he")


def for_dead_units() -> tuple[Remedy, ...]:
    return remedies("negative_bias", "leaky_relu", "he_init", "lower_lr")


def for_stalled(vanishing: bool) -> tuple[Remedy, ...]:
    if vanishing:
        return remedies("relu_he", "normalisation", "adam", "raise_lr")
    return remedies("raise_lr", "adam")


def for_update_too_large() -> tuple[Remedy, ...]:
    return remedies("lower_lr", "clip_gradients")


def for_skipped(persistent: bool) -> tuple[Remedy, ...]:
    if persistent:
        return remedies("loss_scale", "find_nan", "lower_lr")
    return remedies("loss_scale")


def for_zero_gradients() -> tuple[Remedy, ...]:
    return remedies("check_loss")
