"""Phase diagram of a tanh or sigmoid MLP in the (sigma_w^2, sigma_b^2) plane.

Colour is log10 chi_1 = log10(sigma_w^2 E[phi'(sqrt(q*) z)^2]) at the fixed point q*; the bold line
chi_1 = 1 separates the ordered phase (vanishing gradients) from the chaotic phase (exploding).
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from gradprobe.errors import UnknownChoiceError
from gradprobe.theory import chi1

PHASE_ACTIVATIONS = ("tanh", "sigmoid")
_RANGES = {"tanh": (0.05, 4.0, 0.5), "sigmoid": (0.5, 150.0, 5.0)}


def chi1_grid(activation: str, sigma_w2: np.ndarray, sigma_b2: np.ndarray) -> np.ndarray:
    """chi_1 on the grid sigma_b2 (rows) x sigma_w2 (columns).

    Example:
        >>> g = chi1_grid("tanh", np.array([1.0]), np.array([0.0]))
        >>> round(float(g[0, 0]), 6)
        1.0
    """
    return np.array([[chi1(activation, w, b) for w in sigma_w2] for b in sigma_b2])


def phase_diagram(
    activation: str,
    sigma_w2: float | None = None,
    sigma_b2: float | None = None,
    *,
    n: int = 40,
) -> Figure:
    """A matplotlib Figure: chi_1 contours, phases labelled, the configuration (if given) marked.

    Example:
        >>> fig = phase_diagram("sigmoid", 1.0, 0.0, n=8)
        >>> fig.axes[0].get_xlabel()
        'weight variance sigma_w^2 = fan_in Var(W)'
    """
    if activation not in PHASE_ACTIVATIONS:
        raise UnknownChoiceError("phase-diagram activation", activation, PHASE_ACTIVATIONS)
    w_lo, w_hi, b_hi = _RANGES[activation]
    if sigma_w2 is not None:
        w_hi = max(w_hi, 1.2 * sigma_w2)
    if sigma_b2 is not None:
        b_hi = max(b_hi, 1.2 * sigma_b2)
    ws, bs = np.linspace(w_lo, w_hi, n), np.linspace(0.0, b_hi, n)
    log_chi = np.log10(np.maximum(chi1_grid(activation, ws, bs), 1e-300))
    fig = Figure(figsize=(6.4, 4.8))
    ax = fig.add_subplot()
    lo, hi = min(log_chi.min(), -0.01), max(log_chi.max(), 0.01)
    norm = TwoSlopeNorm(vmin=lo, vcenter=0.0, vmax=hi)
    levels = np.concatenate([np.linspace(lo, 0.0, 11), np.linspace(0.0, hi, 11)[1:]])
    mesh = ax.contourf(ws, bs, log_chi, levels=levels, cmap="coolwarm", norm=norm)
    fig.colorbar(mesh, ax=ax, label="log10 chi_1")
    ax.contour(ws, bs, log_chi, levels=[0.0], colors="black", linewidths=2.5)
    _label_phases(ax, ws, bs, log_chi)
    if sigma_w2 is not None:
        ax.plot(
            [sigma_w2],
            [sigma_b2 or 0.0],
            "k*",
            markersize=14,
            clip_on=False,  # on the sigma_b^2 = 0 edge it is drawn whole, over the spine
            zorder=5,
            label="your configuration",
        )
        ax.legend(loc="upper center")
    ax.set_xlabel("weight variance sigma_w^2 = fan_in Var(W)")
    ax.set_ylabel("bias variance sigma_b^2")
    ax.set_title(f"{activation}: phase diagram at initialisation (bold: chi_1 = 1)")
    return fig


def _label_phases(ax: Axes, ws: np.ndarray, bs: np.ndarray, log_chi: np.ndarray) -> None:
    """Write 'ordered' and 'chaotic' inside each phase (at a quarter and at nine tenths across)."""
    y = int(0.35 * (len(bs) - 1))
    for frac, label, sign in (
        (0.12, "ordered\n(vanishing)", -1),
        (0.88, "chaotic\n(exploding)", 1),
    ):
        j = int(frac * (len(ws) - 1))
        if sign * log_chi[y, j] > 0:
            ax.text(ws[j], bs[y], label, ha="center", va="center", fontsize=11, weight="bold")
