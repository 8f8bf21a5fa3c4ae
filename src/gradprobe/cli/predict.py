"""``gradprobe predict``: the mean-field prediction for an MLP, before any training."""

from __future__ import annotations

import json
import math

import click
from rich.table import Table

from gradprobe.cli._output import console as make_console
from gradprobe.cli._output import print_table, say
from gradprobe.errors import UsageError
from gradprobe.theory import MLPPrediction, predict_mlp


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return "inf" if math.isinf(x) else f"{x:.3g}"


def _table(pred: MLPPrediction) -> Table:
    table = Table(title=f"mean-field prediction at initialisation, widths {list(pred.widths)}")
    cols = ["layer", "fan_in->width", "activation", "q", "a", "chi", "||delta|| / last"]
    cols += ["||grad W|| / last"] + (["batch ||G|| / last"] if pred.batch_size else [])
    for col in cols:
        table.add_column(col, justify="right")
    for lay in pred.layers:
        row = [
            str(lay.index),
            f"{lay.fan_in}->{lay.width}",
            lay.activation,
            _fmt(lay.q),
            _fmt(lay.a),
        ]
        row += [_fmt(lay.chi), _fmt(lay.delta_norm), _fmt(lay.grad_norm)]
        table.add_row(*row, *([_fmt(lay.batch_grad_norm)] if pred.batch_size else []))
    return table


def _summary(pred: MLPPrediction) -> list[str]:
    lines = [
        f"verdict: {pred.verdict.message}",
        f"chi1 = {_fmt(pred.chi1)}, q* = {_fmt(pred.q_star)}, depth scale xi = "
        f"{_fmt(pred.depth_scale)} layers (trainable depth ~ 6 xi = {_fmt(pred.trainable_depth)})",
        f"seed-to-seed spread: x/ {pred.seed_spread:.2f} (beta = sum 1/width = {pred.beta:.3f}); "
        f"mu2/mu1^2 = {_fmt(pred.isometry_ratio)}",
    ]
    rise = pred.first_to_last / pred.independent_grad_norm_by_depth[0]
    if pred.readout_coupling:
        lines.append(
            f"readout: {pred.loss}, coupled to the readout weights, logit-scale spread included "
            f"(first/readout ratio x {rise:.3f} over gradient independence)"
        )
    else:
        lines.append(f"readout: {pred.loss}, gradient independence")
    lines.append(
        f"typical net (geometric mean over nets): first/readout ratio "
        f"{_fmt(pred.first_to_last_typical)}"
    )
    return lines + [f"note: {n}" for n in pred.notes]


def _check(depth: int, width: int, inputs: int | None, outputs: int, batch: int | None) -> None:
    for name, value in (("--depth", depth), ("--width", width), ("--outputs", outputs)):
        if value < 1:
            raise UsageError(f"{name} must be a positive integer, got {value}")
    if inputs is not None and inputs < 1:
        raise UsageError(f"--inputs must be a positive integer, got {inputs}")
    if batch is not None and batch < 1:
        raise UsageError(f"--batch-size must be a positive integer, got {batch}")


@click.command("predict")
@click.option("--activation", default="relu", show_default=True, help="Hidden-layer activation.")
@click.option(
    "--depth",
    default=10,
    show_default=True,
    help="Hidden layers, as in 'gradprobe run' (the linear readout comes on top).",
)
@click.option("--width", default=64, show_default=True, help="Hidden-layer width.")
@click.option("--init", "init", default="glorot_uniform", show_default=True, help="Init scheme.")
@click.option("--inputs", type=int, default=None, help="Input features [default: width].")
@click.option("--outputs", default=1, show_default=True, help="Output units.")
@click.option("--weight-var", type=float, default=None, help="sigma_w^2 = fan_in Var(W).")
@click.option("--bias-var", type=float, default=None, help="sigma_b^2 = Var(b).")
@click.option(
    "--loss",
    default=None,
    help="Readout loss: cross_entropy, binary_cross_entropy or mse "
    "[default: cross_entropy for >= 2 outputs, else mse].",
)
@click.option(
    "--independent-readout",
    is_flag=True,
    help="Leave out the readout's coupling and spread (plain gradient independence).",
)
@click.option("--batch-size", type=int, default=None, help="Also predict batch-mean gradients.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
@click.option("--phase-plot", type=click.Path(dir_okay=False), default=None, help="Save a PNG.")
def predict(
    activation: str,
    depth: int,
    width: int,
    init: str,
    inputs: int | None,
    outputs: int,
    weight_var: float | None,
    bias_var: float | None,
    loss: str | None,
    independent_readout: bool,
    batch_size: int | None,
    as_json: bool,
    phase_plot: str | None,
) -> None:
    """Predict per-layer gradient norms of an MLP at initialisation (mean-field theory)."""
    _check(depth, width, inputs, outputs, batch_size)
    widths = [inputs or width] + [width] * depth + [outputs]
    pred = predict_mlp(
        widths,
        activation,
        init,
        weight_var=weight_var,
        bias_var=bias_var,
        batch_size=batch_size,
        loss=loss,
        readout_coupling=not independent_readout,
    )
    if phase_plot:
        _save_phase_plot(pred, activation, phase_plot)
    if as_json:
        click.echo(json.dumps(pred.to_dict()))
        return
    console = make_console()
    print_table(console, _table(pred))
    for line in _summary(pred):
        say(console, line, hanging=4)


def _save_phase_plot(pred: MLPPrediction, activation: str, path: str) -> None:
    from gradprobe.views.phase import phase_diagram

    hidden = pred.layers[1:-1] or pred.layers[:1]
    mid = hidden[len(hidden) // 2]
    phase_diagram(activation.lower(), mid.sigma_w2, mid.bias_var).savefig(path, dpi=120)
