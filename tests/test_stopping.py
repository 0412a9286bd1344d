"""The stopping rule (texture/synthesis/stopping.py, --stop-tolerance): each image of a batch stops on its
own once its loss stops improving, and the images still optimised run as they would without it."""
import dataclasses

import pytest
import torch
from conftest import gram_options

import model
from texture.synthesis import optimize, stopping

LAYERS = {"relu1_1": 1.0, "relu2_1": 1.0, "relu3_1": 1.0}


def test_plateau_stops_each_image_when_its_best_loss_stops_falling():
    rule = stopping.Plateau(3, window=2, tolerance=0.1)
    curves = [[8, 4, 2, 1, 0.5], [8, 7.9, 7.8, 7.7, 7.6], [1, 1, 1, 1, 1]]  # halving, creeping, flat
    stops = [rule.done([c[i] for c in curves], [True, True, True]) for i in range(5)]
    assert stops == [[], [], [1, 2], [1, 2], [1, 2]]  # the third value is the first with a window behind it
    rule = stopping.Plateau(2, window=2, tolerance=0.1)
    assert [rule.done([1, 1], [False, True]) for _ in range(4)] == [[], [], [1], [1]]  # inactive rows are left out


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return model.TextureNet(3).eval().requires_grad_(False)


def test_a_converged_image_stops_early_and_a_slow_one_runs_as_without_the_rule(net):
    g = torch.Generator().manual_seed(0)
    flat = torch.full((32, 32), 0.5)  # its shuffled grey levels are the target itself: done from the start
    hard = torch.rand(32, 32, generator=g).round() * 0.6 + 0.2 * torch.rand(32, 32, generator=g)
    opts = gram_options(LAYERS, steps=30)
    ruled = optimize.synthesize(net, [flat, hard], None, dataclasses.replace(opts, stop_tolerance=0.05, stop_window=5),
                                seeds=[1, 2])
    plain = optimize.synthesize(net, [flat, hard], None, opts, seeds=[1, 2])
    assert ruled[0]["steps"] == 6 and len(ruled[0]["curve"]) == 6 and plain[0]["steps"] == 30
    assert ruled[1]["steps"] == 30 and ruled[1]["curve"][0] > 10 * ruled[1]["loss"]
    # alone in the batch once the flat image stopped: the same path up to the rounding of a smaller batch,
    # which L-BFGS amplifies as it does between a batch and its images run alone (test_gen.py)
    assert ruled[1]["loss"] == pytest.approx(plain[1]["loss"], rel=0.05)
    assert (ruled[1]["image"] - plain[1]["image"]).abs().mean() < 0.02
