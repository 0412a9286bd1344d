"""The shorter iteration counts of outputs from --short-from on (optimize.resolve): which outputs take
them, that counts given on the command line stay for every size, and that gen.py runs and records them."""
import argparse
import dataclasses
import json
import os

import pytest
import torch

import gen
import model
from hyperparams import Hyperparams, add_arguments, given
from texture.data import images
from texture.synthesis import optimize
from texture.synthesis.options import Options

H = Hyperparams()
SHORT = {"short_from": 48, "short_steps": 7, "short_refine_steps": 3, "short_refine_lr": 0.2}


@pytest.fixture(scope="module")
def net(quick_vgg):
    return model.TextureNet(1, "vgg19").eval()


def counts(o):
    return o.levels, o.steps, o.refine_steps, o.refine_lr


def options_of(argv):
    """Options as gen.py builds them from these flags."""
    args = add_arguments(argparse.ArgumentParser(), ["device", "gen"]).parse_args(argv)
    return Options.from_args(args, given=given(argv, ["gen"]))


def test_only_outputs_at_one_level_from_short_from_on_take_the_short_counts(net):
    o, target = Options(**SHORT), torch.rand(48, 48)
    long = (o.steps, o.refine_steps, o.refine_lr)
    assert counts(optimize.resolve(net, [target], (48, 64), o)) == (1, 7, 3, 0.2)
    assert counts(optimize.resolve(net, [target], (40, 64), o)) == (1, *long)  # one side below
    assert counts(optimize.resolve(net, [target], (48, 64), dataclasses.replace(o, tile=True))) == (1, *long)
    assert counts(optimize.resolve(net, [target], (96, 96), dataclasses.replace(o, levels=2))) == (2, *long)
    assert counts(optimize.resolve(net, [target], (64, 64), dataclasses.replace(o, short_from=0))) == (1, *long)
    once = optimize.resolve(net, [target], (48, 64), o)
    assert once.short_from == 0 and optimize.resolve(net, [target], (48, 64), once) == once  # applied once


def test_gen_defaults_switch_to_the_short_counts_at_short_from(net):
    o = options_of([])
    big, small = (H.short_from,) * 2, (H.short_from - 16,) * 2
    assert counts(optimize.resolve(net, [torch.rand(*big)], big, o)) == \
        (1, H.short_steps, H.short_refine_steps, H.short_refine_lr)
    assert counts(optimize.resolve(net, [torch.rand(*small)], small, o)) == (1, H.steps, H.refine_steps, H.refine_lr)


@pytest.mark.parametrize("flags", [["--steps", "300"], ["--refine-steps", "100"], ["--refine-lr", "0.05"]])
def test_counts_given_stay_for_every_size(net, flags):
    o = options_of(flags)
    big = (H.short_from,) * 2
    assert counts(optimize.resolve(net, [torch.rand(*big)], big, o)) == (1, 300, 100, 0.05)


def test_short_flags_with_counts_given_are_refused(firsts, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        gen.main([firsts[0], "--backbone", "random", "--gen-dir", str(tmp_path), "--steps", "5", "--short-steps", "3"])
    assert e.value.code == 2
    assert "--short-steps has no effect with --steps, --refine-steps or --refine-lr given" in capsys.readouterr().err
    assert not os.listdir(tmp_path)


def test_gen_runs_and_records_the_short_counts(firsts, tmp_path):
    gen.main([firsts[0], "--backbone", "random", "--gen-dir", str(tmp_path), "--image-size", "32", "--device", "cpu",
              "--dtype", "fp32", "--snapshot-every", "0", "--short-from", "32", "--short-steps", "2",
              "--short-refine-steps", "1", "--polish-steps", "1"])
    label = images.label_from_filename(os.path.basename(firsts[0]))
    result = json.load(open(tmp_path / label / "result.json"))
    assert result["recipe"] == {"levels": 1, "steps": 2, "refine_steps": 1, "refine_lr": H.short_refine_lr,
                                "polish_steps": 1}
    assert result["steps"] == 4 and result["refine"]["steps"] == 1
