import dataclasses
import json
import os

import pytest

import hyperparams
from hyperparams import Hyperparams, parse_args
from texture.run import outputs


def test_every_field_has_a_group_and_help():
    info = hyperparams._comments()
    for f in dataclasses.fields(Hyperparams):
        group, text = info[f.name]
        assert group and text, f.name


def test_flags_use_dashes_and_defaults_come_from_the_dataclass():
    args = parse_args("", ["device", "seed", "train"], [])
    assert args.batch_size == Hyperparams().batch_size
    args = parse_args("", ["device", "seed", "train"], ["--batch-size", "4", "--lr", "0.5"])
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
        parse_args("", ["device", "seed", "train"], argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert word in err


def test_groups_select_flags():
    with pytest.raises(SystemExit):
        parse_args("", ["train"], ["--steps", "3"])
    assert parse_args("", ["gen"], ["--steps", "3"]).steps == 3


def test_zero_allowed_where_it_means_off_and_refused_elsewhere(capsys):
    defaults = Hyperparams()
    off = {"refine_steps": "--refine-steps", "spectrum_weight": "--spectrum-weight",
           "snapshot_every": "--snapshot-every"}
    assert all(getattr(defaults, k) > 0 for k in off)  # so that parsing 0 shows the flag was read
    args = parse_args("", ["seed", "gen"], [a for flag in off.values() for a in (flag, "0")])
    assert all(getattr(args, k) == 0 for k in off)
    for flag in ("--steps", "--gcd-weight", "--gcd-patches", "--lbfgs-history"):
        with pytest.raises(SystemExit):
            parse_args("", ["seed", "gen"], [flag, "0"])
        assert f"argument {flag}: must be > 0, got 0" in capsys.readouterr().err


def test_given_tells_flags_on_the_command_line_from_defaults():
    argv = ["--seed", "0", "--batch=4", "--resume", "extra.png"]  # 0 is the default, but given; --batch: abbreviated
    assert hyperparams.given(argv, ["seed", "train"]) == {"seed", "batch_size"}
    assert hyperparams.given([], ["seed", "train"]) == set()


def test_check_turns_a_combination_into_an_argparse_error(capsys):
    check = lambda args, given: "--seed 3 is unlucky" if args.seed == 3 and "seed" in given else None
    assert parse_args("", ["seed"], ["--seed", "2"], check=check).seed == 2
    with pytest.raises(SystemExit) as e:
        parse_args("", ["seed"], ["--seed", "3"], check=check)
    assert e.value.code == 2 and "error: --seed 3 is unlucky" in capsys.readouterr().err


def test_save_args_writes_json(tmp_path):
    args = parse_args("", ["seed"], ["--seed", "7"])
    path = tmp_path / "sub" / "hparams.json"
    outputs.save_args(args, str(path))
    assert json.loads(path.read_text())["seed"] == 7


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "report.json"
    outputs.save_json({"old": 1}, str(path))

    def half_then_fail(tmp):
        with open(tmp, "w") as f:
            f.write("{\"half")
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError):
        outputs.write_atomic(str(path), half_then_fail)
    with pytest.raises(TypeError, match="keys must be"):  # found half-way through the dump
        outputs.save_json({"a": 1, (2, 3): 4}, str(path))
    assert json.loads(path.read_text()) == {"old": 1}
    assert os.listdir(tmp_path) == ["report.json"]
