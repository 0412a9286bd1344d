import dataclasses
import json

import pytest

import hyperparams
from hyperparams import Hyperparams, parse_args


def test_every_field_has_a_group_and_help():
    info = hyperparams._comments()
    for f in dataclasses.fields(Hyperparams):
        group, text = info[f.name]
        assert group and text, f.name


def test_flags_use_dashes_and_defaults_come_from_the_dataclass():
    args = parse_args("", ["run", "train"], [])
    assert args.batch_size == Hyperparams().batch_size
    args = parse_args("", ["run", "train"], ["--batch-size", "4", "--lr", "0.5"])
    assert (args.batch_size, args.lr) == (4, 0.5)


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit) as e:
        parse_args("doc", ["train"], ["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--batch-size" in out and f"(default: {Hyperparams().batch_size})" in out


@pytest.mark.parametrize("argv, word", [
    (["--no-such-flag"], "unrecognized"),
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "two"], "--batch-size"),
    (["--epochs", "-3"], "--epochs"),
    (["--compile", "maybe"], "--compile"),
    (["--dtype", "int8"], "--dtype"),
])
def test_bad_flags_are_one_line_errors(capsys, argv, word):
    with pytest.raises(SystemExit) as e:
        parse_args("", ["run", "train"], argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert word in err


def test_groups_select_flags():
    with pytest.raises(SystemExit):
        parse_args("", ["train"], ["--steps", "3"])
    assert parse_args("", ["gen"], ["--steps", "3"]).steps == 3


def test_zero_allowed_where_it_means_off():
    assert parse_args("", ["run", "gen"], ["--seed", "0", "--time-budget", "0"]).time_budget == 0


def test_save_args_writes_json(tmp_path):
    args = parse_args("", ["run"], ["--seed", "7"])
    path = tmp_path / "sub" / "hparams.json"
    hyperparams.save_args(args, str(path))
    assert json.loads(path.read_text())["seed"] == 7
    assert [p.name for p in path.parent.iterdir()] == ["hparams.json"]
