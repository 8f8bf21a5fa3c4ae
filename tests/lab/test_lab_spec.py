"""Sweep specs: CLI lists and TOML files, validated with messages naming file, key and values."""

from __future__ import annotations

import pytest

from gradprobe.errors import UsageError
from gradprobe.lab import expand, load_toml, parse
from gradprobe.lab.spec import base


def cells_of(raw):  # type: ignore[no-untyped-def]
    spec = parse(raw)
    model, train = base(spec, "binary", 1)
    return spec, expand(spec, model, train, spec.data.identity())


def test_cli_lists_expand_to_every_combination_in_order():
    spec, cells = cells_of(
        {"data": "classification", "activation": "sigmoid,relu", "depth": "2,5,10"}
    )
    assert spec.n_cells == len(cells) == 6
    assert [c.label for c in cells[:2]] == [
        "activation=sigmoid depth=2",
        "activation=sigmoid depth=5",
    ]
    assert cells[-1].model.activation == "relu" and cells[-1].model.depth == 10
    assert cells[0].model.width == 8 and cells[0].train.optimizer == "adam"  # the variant's base
    assert spec.seeds == (0, 1, 2)
    assert len({c.key for c in cells}) == 6


def test_cell_keys_are_stable_and_depend_on_the_seeds():
    _, a = cells_of({"data": "classification", "depth": "2"})
    _, b = cells_of({"data": "classification", "depth": 2})
    _, c = cells_of({"data": "classification", "depth": 2, "seeds": 5})
    assert a[0].key == b[0].key != c[0].key


def test_training_axes_and_zero_meaning_off():
    _, cells = cells_of(
        {"data": "classification", "clip": "0,1.5", "batch_size": 0, "residual": "on,off"}
    )
    clips = {(c.train.clip_norm, c.model.residual) for c in cells}
    assert clips == {(None, True), (None, False), (1.5, True), (1.5, False)}
    assert all(c.train.batch_size is None for c in cells)


@pytest.mark.parametrize(
    "raw, message",
    [
        (
            {"data": "classification", "activation": "sigmod"},
            "--activation: got 'sigmod', expected one of sigmoid",
        ),
        ({"data": "classification", "depth": "0"}, "--depth: got 0, expected a whole number >= 1"),
        ({"data": "classification", "lr": "-1"}, "--lr: got -1, expected a positive number"),
        ({"data": "classification", "seeds": 0}, "--seeds: got 0"),
        ({"data": "nope"}, "--data: got 'nope', expected one of california, classification"),
        ({"data": "classification", "colour": "red"}, "--colour is not a sweep key"),
        ({"data": "x.csv"}, "--target: got None"),
        ({"data": "wine", "data_params": "n=3"}, "no parameters: wine has none"),
        (
            {"data": "classification", "batched": "maybe"},
            "--batched: got 'maybe', expected one of auto",
        ),
    ],
)
def test_bad_values_name_the_key_and_the_valid_values(raw, message):
    with pytest.raises(UsageError, match=None) as exc:
        parse(raw)
    assert message in str(exc.value)


def test_toml_spec_file_messages_name_the_file_and_the_key(tmp_path):
    f = tmp_path / "sweep.toml"
    f.write_text('data = "classification"\nactivation = ["sigmoid", "tanhh"]\n')
    with pytest.raises(UsageError) as exc:
        parse(load_toml(f), str(f))
    assert str(exc.value).startswith(f"{f}: key 'activation': got 'tanhh', expected one of")
    f.write_text('data = "classification"\ndepht = [2]\n')
    with pytest.raises(UsageError, match=r"sweep.toml: key 'depht' is not a sweep key"):
        parse(load_toml(f), str(f))
    f.write_text("data = \n")
    with pytest.raises(UsageError, match="not a valid TOML spec file"):
        load_toml(f)


def test_toml_spec_file_with_lists_tables_and_a_relative_data_file(tmp_path):
    (tmp_path / "d.csv").write_text(
        "a,b,y\n" + "\n".join(f"{i},{i % 3},{i % 2}" for i in range(20))
    )
    f = tmp_path / "s.toml"
    f.write_text('data = "d.csv"\ntarget = "y"\ndepth = [2, 3]\nseeds = [4, 7]\nresidual = true\n')
    spec = parse(load_toml(f), str(f))
    assert spec.data.kind == "file" and spec.data.name == str(tmp_path / "d.csv")
    assert spec.axes == {"depth": (2, 3), "residual": (True,)} and spec.seeds == (4, 7)
    g = tmp_path / "g.toml"
    g.write_text('data = "make_moons"\nseeds = 2\n[data_params]\nn_samples = 60\nnoise = 0.1\n')
    assert dict(parse(load_toml(g), str(g)).data.params) == {"n_samples": 60, "noise": 0.1}


def test_run_and_sweep_share_one_option_table():
    from gradprobe.experiments.spec import OPTIONS
    from gradprobe.lab.spec import AXES, CHECKS

    assert set(AXES) <= set(OPTIONS)
    assert all(CHECKS[k] is OPTIONS[k].check for k in AXES)


def test_run_sets_norm_residual_and_clipping_from_flags_and_a_toml_file(tmp_path):
    # gradprobe run could not set norm, residual or clipping, which a sweep could
    import json

    import click
    from click.testing import CliRunner

    from gradprobe.cli.lab import run_config_options
    from gradprobe.experiments.spec import resolve

    @click.command()
    @click.argument("experiment")
    @run_config_options
    def run(experiment, **kw):  # type: ignore[no-untyped-def]
        click.echo(json.dumps(resolve(experiment, variant="deep-sigmoid", **kw).to_dict()))

    f = tmp_path / "run.toml"
    f.write_text(
        'data = "classification"\nnorm = "layer"\nresidual = true\nclip = 0.5\nepochs = 2\n'
    )
    res = CliRunner().invoke(run, ["classification", "--config", str(f), "--norm", "batch"])
    assert res.exit_code == 0, res.output
    c = json.loads(res.output)
    model = c["variants"][0]["model"]
    assert (model["norm"], model["residual"]) == ("batch", True)  # the flag overrides the file
    assert c["train"]["clip_norm"] == 0.5 and c["train"]["epochs"] == 2
    assert c["variants"][0]["name"] == "deep-sigmoid[norm=batch,residual=on]"
    res = CliRunner().invoke(run, ["classification", "--clip", "-1"])
    assert res.exit_code != 0 and "--clip must be a number >= 0, got '-1'" in str(res.exception)


def test_a_run_config_file_takes_one_value_per_key(tmp_path):
    from gradprobe.experiments.spec import resolve

    f = tmp_path / "run.toml"
    f.write_text("depth = [2, 4]\n")
    with pytest.raises(UsageError, match="expected one value \\(lists are for gradprobe sweep\\)"):
        resolve("classification", config=f)
    f.write_text("seeds_x = 2\n")
    with pytest.raises(UsageError, match="key 'seeds_x' is not a run option"):
        resolve("classification", config=f)


def test_a_sweep_crosses_remedies_by_their_catalogue_names_with_other_axes():
    from gradprobe.lab.spec import base, expand

    spec = parse({"data": "classification", "variant": "deep-sigmoid", "depth": "2,8",
                  "remedy": "baseline,normalisation"})  # fmt: skip
    assert spec.axes["remedy"] == ("baseline", "batch_norm")  # the old name still works
    model, train = base(spec, "binary", 1)
    cells = expand(spec, model, train, "id")
    assert [c.label for c in cells] == [
        "depth=2 remedy=baseline", "depth=2 remedy=batch_norm",
        "depth=8 remedy=baseline", "depth=8 remedy=batch_norm",
    ]  # fmt: skip
    assert [c.model.norm for c in cells] == ["none", "batch", "none", "batch"]
    assert cells[3].model.depth == 8
    with pytest.raises(UsageError, match="--remedy: got 'find_nan', expected one of baseline"):
        parse({"data": "classification", "remedy": "find_nan"})
