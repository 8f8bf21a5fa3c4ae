"""predict_mlp: the mean-field prediction for an MLP at initialisation, as one frozen record."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gradprobe.errors import UsageError
from gradprobe.theory import batch, factors, meanfield, readout, recursion, spread, typical
from gradprobe.theory._json import jsonable
from gradprobe.theory.activations import Activation, get_activation
from gradprobe.theory.init import canonical_init, init_variances
from gradprobe.theory.verdicts import Verdict, verdict

PerLayer = float | Sequence[float] | None


@dataclass(frozen=True)
class LayerPrediction:
    """One weight layer l = index (1-based, input to output); the last one is the linear readout.

    ``q``, ``a``: pre-activation and post-activation second moments (for the readout a = q);
    ``chi``: backward gain chi_l (None for the readout); ``delta_norm``, ``grad_norm``,
    ``batch_grad_norm``: predicted ||delta^l||, per-example ||dl/dW^l||_F and batch-mean
    ||G_l||, each relative to the readout's.
    """

    index: int
    fan_in: int
    width: int
    activation: str
    weight_var: float
    sigma_w2: float
    bias_var: float
    q: float
    a: float
    chi: float | None
    delta_norm: float
    grad_norm: float
    batch_grad_norm: float | None


@dataclass(frozen=True)
class MLPPrediction:
    """The mean-field prediction for one MLP; every sequence is ordered input to output.

    ``chi1``, ``q_star``, ``depth_scale`` (xi = 1/|ln chi1|), ``trainable_depth`` (6 xi) refer to
    the fixed point of the typical hidden layer; ``beta`` = sum 1/n_j over hidden widths and
    ``seed_spread`` = exp(sqrt(5 beta)) give the seed-to-seed band ``grad_norm_band``;
    ``isometry_ratio`` = mu2/mu1^2 and ``jacobian_spectrum_var`` describe the Jacobian spectrum.
    ``loss`` is the readout loss assumed; ``readout_coupling`` says whether the readout's coupling
    to its own weights and the spread of the logit scale are included;
    ``independent_grad_norm_by_depth`` is the plain gradient-independence prediction (theory.md
    3.3), without them. ``first_to_last_typical`` is the geometric mean over nets of one net's
    ratio (batch RMS of per-example norms), which sits off the ensemble value by a finite-width
    log-normal offset (:mod:`gradprobe.theory.typical`).
    """

    widths: tuple[int, ...]
    init: str | None
    input_second_moment: float
    layers: tuple[LayerPrediction, ...]
    grad_norm_by_depth: tuple[float, ...]
    delta_norm_by_depth: tuple[float, ...]
    loss: str
    readout_coupling: bool
    independent_grad_norm_by_depth: tuple[float, ...]
    first_to_last_typical: float
    batch_grad_norm_by_depth: tuple[float, ...] | None
    batch_size: int | None
    chi1: float
    q_star: float
    depth_scale: float
    trainable_depth: float
    beta: float
    seed_spread: float
    log_tolerance: float
    grad_norm_band: tuple[tuple[float, ...], tuple[float, ...]]
    isometry_ratio: float
    jacobian_spectrum_var: float
    verdict: Verdict
    notes: tuple[str, ...]

    @property
    def depth(self) -> int:
        """Number of weight layers L."""
        return len(self.layers)

    @property
    def first_to_last(self) -> float:
        """Predicted per-example ||grad W^1|| / ||grad W^L||."""
        return self.grad_norm_by_depth[0]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (non-finite numbers become None) plus ``depth``, ``first_to_last``."""
        out = dict(jsonable(self))
        out.update(depth=self.depth, first_to_last=self.first_to_last)
        return out


def _check_widths(widths: Sequence[int]) -> list[int]:
    out = [int(n) for n in widths]
    if len(out) < 2:
        raise UsageError(f"widths must list input, hidden and output sizes, got {list(widths)}")
    if any(n < 1 for n in out) or any(n != w for n, w in zip(out, widths, strict=True)):
        raise UsageError(f"widths must be positive integers, got {list(widths)}")
    return out


def _per_layer(value: PerLayer, n: int, what: str) -> list[float] | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return [float(value)] * n
    out = [float(x) for x in value]
    if len(out) != n:
        raise UsageError(f"{what} needs one value per weight layer ({n}), got {len(out)}")
    if any(x < 0 or not math.isfinite(x) for x in out):
        raise UsageError(f"{what} must be finite and >= 0, got {out}")
    return out


def _activations(activation: str | Sequence[str], n_hidden: int) -> list[Activation]:
    if isinstance(activation, (str, Activation)):
        return [get_activation(activation)] * n_hidden
    acts = [get_activation(a) for a in activation]
    if len(acts) != n_hidden:
        raise UsageError(
            f"activation needs one name per hidden layer ({n_hidden}), got {len(acts)}"
        )
    return acts


def layer_variances(
    widths: Sequence[int],
    init: str | None,
    weight_var: PerLayer = None,
    bias_var: PerLayer = None,
    gain: float = 1.0,
) -> tuple[list[float], list[float]]:
    """Raw Var(W^l) and Var(b^l) per layer: from ``init``, overridden by sigma_w^2 / sigma_b^2.

    ``weight_var`` is sigma_w^2 = fan_in * Var(W) (scalar or per layer), ``bias_var`` is Var(b).

    Example:
        >>> layer_variances([8, 4, 1], "he_normal", bias_var=0.1)
        ([0.25, 0.5], [0.1, 0.1])
    """
    n = len(widths) - 1
    sw2, sb2 = _per_layer(weight_var, n, "weight_var"), _per_layer(bias_var, n, "bias_var")
    if init is None and (sw2 is None or sb2 is None):
        raise UsageError("give init=..., or both weight_var and bias_var")
    base = [init_variances(init, widths[i], widths[i + 1], gain) for i in range(n)] if init else []
    v = [sw2[i] / widths[i] for i in range(n)] if sw2 else [b.weight_var for b in base]
    s = sb2 if sb2 else [b.bias_var for b in base]
    return v, s


def _typical_hidden(
    widths: Sequence[int], v: Sequence[float], s: Sequence[float]
) -> tuple[float, float]:
    """Median sigma_w^2 and sigma_b^2 over hidden-to-hidden layers (layer 1 if there are none)."""
    idx = range(1, len(v) - 1) if len(v) > 2 else range(0, 1)
    return (
        statistics.median(widths[i] * v[i] for i in idx),
        statistics.median(s[i] for i in idx),
    )


def _normalised(values: Sequence[float]) -> tuple[float, ...]:
    last = values[-1]
    return tuple(math.sqrt(x / last) if last > 0 else math.nan for x in values)


def _notes(
    acts: Sequence[Activation], beta: float, batch_size: int | None, chi1: float
) -> tuple[str, ...]:
    notes = []
    if beta > factors.BETA_WARN:
        notes.append(
            f"beta = sum 1/width = {beta:.2f} > {factors.BETA_WARN}: single nets vary wildly "
            "around this prediction (Hanin 2018), and its finite-width parts (readout coupling, "
            "logit-scale spread, typical net) are leading order in 1/width only; widen the "
            "hidden layers"
        )
    if batch_size and any(a.name not in ("sigmoid", "relu") for a in acts):
        notes.append(
            "the batch-mean prediction is checked for sigmoid and ReLU only; it misses for tanh "
            "at large batch sizes -- compare per-example norms instead"
        )
    if all(a.name == "relu" for a in acts) and abs(chi1 - 1) < 1e-6:
        notes.append("ReLU cannot reach dynamical isometry: mu2/mu1^2 = 2 at every q*")
    return tuple(notes)


def _layers(
    widths: Sequence[int],
    acts: Sequence[Activation],
    v: Sequence[float],
    s: Sequence[float],
    rec: recursion.Recursion,
    coupling: tuple[Sequence[float], Sequence[float]],
    batch_norms: Sequence[float] | None,
) -> tuple[LayerPrediction, ...]:
    grad_f, delta_f = coupling
    deltas = _normalised([d * r for d, r in zip(rec.delta2(widths), delta_f, strict=True)])
    grads = _normalised([g * r for g, r in zip(rec.grad2(widths), grad_f, strict=True)])
    names = [a.name for a in acts] + ["linear"]
    return tuple(
        LayerPrediction(
            index=i + 1,
            fan_in=widths[i],
            width=widths[i + 1],
            activation=names[i],
            weight_var=v[i],
            sigma_w2=widths[i] * v[i],
            bias_var=s[i],
            q=rec.q[i],
            a=rec.a[i + 1],
            chi=rec.chi[i] if i < len(rec.chi) else None,
            delta_norm=deltas[i],
            grad_norm=grads[i],
            batch_grad_norm=batch_norms[i] if batch_norms else None,
        )
        for i in range(len(v))
    )


@dataclass(frozen=True)
class _Readout:
    """What the readout's loss moments depend on: the loss, the variance of the readout's
    pre-activation from its weights (q_u), its bias variance, the number of outputs and the
    targets' second moment."""

    loss: str
    q_u: float
    bias_var: float
    k: int
    target_second_moment: float

    @classmethod
    def of(
        cls,
        widths: Sequence[int],
        v: Sequence[float],
        s: Sequence[float],
        rec: recursion.Recursion,
        loss: str,
        target_second_moment: float,
    ) -> _Readout:
        q_u = widths[-2] * v[-1] * rec.a[-2]
        return cls(loss, q_u, s[-1], widths[-1], target_second_moment)

    def moments(self, scale: float = 1.0) -> readout.ReadoutMoments:
        """The loss moments with the pre-activation's weight part scaled by ``scale``."""
        return readout.readout_moments(
            self.loss, self.q_u * scale, self.bias_var, self.k, self.target_second_moment
        )


def _readout_coupling(
    widths: Sequence[int],
    acts: Sequence[Activation],
    v: Sequence[float],
    s: Sequence[float],
    rec: recursion.Recursion,
    out: _Readout,
) -> tuple[list[float], list[float]]:
    """Factors on E||grad W^l||^2 and E||delta^l||^2 from the readout's coupling and spread
    (inputs taken as standardised Gaussian features: ln ||x^0||^2 spreads by 2/n_0)."""
    m = out.moments()
    rise = recursion.readout_excess(widths, acts, v, s, rec, 1.0, 1.0)
    sp = spread.spread(widths, acts, s, rec, 2.0 / widths[0])
    grad_f, delta_f = spread.readout_factors(sp, out.moments, rise)
    ratio = m.excess / m.delta2 if m.delta2 > 0 else 0.0
    return (
        [(1 + r * ratio) * f for r, f in zip(rise, grad_f, strict=True)],
        [(1 + r * ratio) * f for r, f in zip(rise, delta_f, strict=True)],
    )


def _typical_offset(
    widths: Sequence[int],
    init: str | None,
    acts: Sequence[Activation],
    v: Sequence[float],
    s: Sequence[float],
    rec: recursion.Recursion,
    out: _Readout,
    batch_size: int | None,
) -> float:
    """Geometric mean over nets / ensemble value of the first/readout ratio."""
    if len(widths) < 3:
        return 1.0
    overlaps = readout.signal_overlaps(
        out.loss, out.q_u, out.bias_var, out.k, out.target_second_moment
    )
    return typical.typical_offset(
        widths,
        acts,
        v,
        s,
        rec,
        (out.moments, *overlaps),
        typical.weight_kurtosis(init),
        batch_size,
    )


def predict_mlp(
    widths: Sequence[int],
    activation: str | Sequence[str] = "relu",
    init: str | None = "glorot_uniform",
    *,
    weight_var: PerLayer = None,
    bias_var: PerLayer = None,
    gain: float = 1.0,
    input_second_moment: float = 1.0,
    batch_size: int | None = None,
    input_cross_moment: float = 0.0,
    loss: str | None = None,
    readout_coupling: bool = True,
    target_second_moment: float = 1.0,
) -> MLPPrediction:
    """Predict per-layer gradient norms of an MLP at initialisation (mean field, theory.md 3.3).

    ``widths`` = [n_0, n_1, ..., n_L], input to output; hidden layers 1..L-1 apply ``activation``
    (one name, or one per hidden layer), layer L is a linear readout. Variances come from ``init``
    (see :mod:`gradprobe.theory.init`; ``gain`` multiplies the weight std, e.g. 4 for the Theano
    sigmoid rule) unless ``weight_var`` (sigma_w^2 = fan_in * Var(W)) or ``bias_var`` (Var(b)) are
    given, each a scalar or one value per weight layer. ``input_second_moment`` is
    a^0 = mean_i E[x_i^2]::

        q^l = n_{l-1} v_l a^{l-1} + s_l,   a^l = E[phi(sqrt(q^l) z)^2]
        chi_l = n_{l+1} v_{l+1} E[phi'(sqrt(q^l) z)^2],   E[delta_l^2] = chi_l E[delta_{l+1}^2]
        ||grad W^l||^2 = n_{l-1} a^{l-1} n_l E[delta_l^2]   (per example)

    ``loss`` is the readout's loss: "cross_entropy" (softmax, labels uniform over the classes; the
    default for >= 2 outputs), "binary_cross_entropy" (one sigmoid output) or "mse" (the default
    for one output; targets of second moment ``target_second_moment``). Two finite-width effects
    of the readout are included beyond gradient independence: delta^L depends on the readout's
    own weights (:mod:`gradprobe.theory.readout` and ``recursion.readout_excess``), and the logit
    scale spreads from net to net and example to example (:mod:`gradprobe.theory.spread`). For a
    10-layer width-64 ReLU/He net they take the first/readout ratio from 1.00 to 1.07 with softmax
    over 10 classes (measured 1.08), to 0.94 with one squared-error output (measured 0.95);
    sigmoid and tanh move by tenths of a percent.
    ``readout_coupling=False`` leaves both out: plain gradient independence (theory.md 3.3 and
    9.2), always kept as ``independent_grad_norm_by_depth``. With ``batch_size``, the two-point
    theory (gradient independence) also predicts the batch-mean gradient norms
    (``input_cross_moment`` = mean_i E[x_ai x_bi] for two distinct examples).

    Example (theory.md 9.1-9.2: sigmoid with Glorot init vanishes):
        >>> p = predict_mlp([64] * 10 + [10], "sigmoid", "glorot_uniform")
        >>> f"{p.chi1:.4f} {p.grad_norm_by_depth[0]:.3g} {p.verdict.kind}"
        '0.0557 5.2e-06 vanishing'
        >>> f"{p.independent_grad_norm_by_depth[0]:.3g}"
        '5.19e-06'
    """
    widths = _check_widths(widths)
    if batch_size is not None and int(batch_size) < 1:
        raise UsageError(f"batch_size must be a positive integer, got {batch_size}")
    if not (input_second_moment >= 0 and math.isfinite(input_second_moment)):
        raise UsageError(f"input_second_moment must be finite and >= 0, got {input_second_moment}")
    init = canonical_init(init) if init else None
    acts = _activations(activation, len(widths) - 2)
    v, s = layer_variances(widths, init, weight_var, bias_var, gain)
    rec = recursion.run(widths, acts, v, s, input_second_moment)
    loss = readout.check_loss(loss or readout.default_loss(widths[-1]), widths[-1])
    out = _Readout.of(widths, v, s, rec, loss, target_second_moment)
    coupling = _readout_coupling(widths, acts, v, s, rec, out)
    if not readout_coupling:
        coupling = ([1.0] * len(v), [1.0] * len(v))
    offset = _typical_offset(widths, init, acts, v, s, rec, out, batch_size)
    batch_norms = None
    if batch_size:
        g2 = batch.batch_grad2(
            widths,
            acts,
            v,
            s,
            rec,
            int(batch_size),
            a0_ab=input_cross_moment,
            loss=loss,
            target_second_moment=target_second_moment,
        )
        batch_norms = _normalised(g2)
    return _assemble(
        widths,
        init,
        acts,
        v,
        s,
        rec,
        (coupling, loss, readout_coupling, offset),
        batch_norms,
        batch_size,
        input_second_moment,
    )


def _assemble(
    widths: Sequence[int],
    init: str | None,
    acts: Sequence[Activation],
    v: Sequence[float],
    s: Sequence[float],
    rec: recursion.Recursion,
    readout_coupling: tuple[tuple[Sequence[float], Sequence[float]], str, bool, float],
    batch_norms: Sequence[float] | None,
    batch_size: int | None,
    a0: float,
) -> MLPPrediction:
    coupling, loss, coupled, offset = readout_coupling
    layers = _layers(widths, acts, v, s, rec, coupling, batch_norms)
    act = acts[-1] if acts else get_activation("linear")
    sw2, sb2 = _typical_hidden(widths, v, s)
    q_star = meanfield.fixed_point(act, sw2, sb2, q0=rec.q[0])
    chi1 = sw2 * act.gain(min(q_star, meanfield.Q_MAX))
    xi = meanfield.depth_scale(chi1)
    beta = factors.hanin_beta(widths[1:-1])
    spread = factors.seed_spread(beta)
    grads = tuple(layer.grad_norm for layer in layers)
    deltas = tuple(layer.delta_norm for layer in layers)
    iso = meanfield.isometry_ratio(act, q_star)
    return MLPPrediction(
        widths=tuple(widths),
        init=init,
        input_second_moment=float(a0),
        layers=layers,
        grad_norm_by_depth=grads,
        delta_norm_by_depth=deltas,
        loss=loss,
        readout_coupling=coupled,
        independent_grad_norm_by_depth=_normalised(rec.grad2(widths)),
        first_to_last_typical=grads[0] * offset,
        batch_grad_norm_by_depth=tuple(batch_norms) if batch_norms else None,
        batch_size=int(batch_size) if batch_size else None,
        chi1=chi1,
        q_star=q_star,
        depth_scale=xi,
        trainable_depth=6.0 * xi,
        beta=beta,
        seed_spread=spread,
        log_tolerance=factors.log_tolerance(beta),
        grad_norm_band=(tuple(g / spread for g in grads), tuple(g * spread for g in grads)),
        isometry_ratio=iso,
        jacobian_spectrum_var=meanfield.jacobian_spectrum_var(
            iso, len(acts), orthogonal=init == "orthogonal"
        ),
        verdict=verdict(chi1, xi, len(layers), grads[0], deltas[0], act.name),
        notes=_notes(acts, beta, batch_size, chi1),
    )
