"""Fidelity: quality measures, the sliced-Wasserstein and spectrum losses, coarse-to-fine synthesis
and the run report, on tiny dot lattices with a randomly initialised network."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import gram_options

import gen
import model
from texture.data import images
from texture.measures import quality
from texture.networks import checkpoints as C
from texture.synthesis import histogram, levels, losses, optimize, spectrum, taps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = {"pool1": 1.0, "pool2": 1.0, "pool3": 1.0, "pool4": 1.0}


def lattice(size, period=8.0, shift=(0.0, 0.0), angle=0.2):
    """Gaussian dots on a rotated square lattice, in [0, 1]."""
    y, x = torch.meshgrid(torch.arange(size[0], dtype=torch.float64) + shift[0],
                          torch.arange(size[1], dtype=torch.float64) + shift[1], indexing="ij")
    u, v = math.cos(angle) * x + math.sin(angle) * y, -math.sin(angle) * x + math.cos(angle) * y
    fu, fv = u / period - torch.floor(u / period) - 0.5, v / period - torch.floor(v / period) - 0.5
    return (0.15 + 0.7 * torch.exp(-(fu ** 2 + fv ** 2) / 0.03)).float()


@pytest.fixture(scope="session")
def net():
    torch.manual_seed(0)
    return model.TextureNet(3).eval()


@pytest.fixture(scope="session")
def dots():
    return lattice((48, 48))


# ---- measures ---------------------------------------------------------------------------------

def test_measures_on_known_cases(dots):
    same = quality.measures(dots, dots)
    assert same["hist_distance"] == 0 and same["spectrum_distance"] == 0 and same["peak_energy"] == pytest.approx(1)
    assert same["target_peak_share"] > 0.3  # a lattice: much of its energy sits in a few peaks
    shifted = lattice((48, 48), shift=(3.3, 5.1))
    assert quality.peak_energy(shifted, dots)[0] > 0.9
    assert quality.peak_energy(lattice((96, 80), shift=(1.0, 2.0)), dots)[0] > 0.8  # other size, same lattice
    noise = dots.flatten()[torch.randperm(dots.numel(), generator=torch.Generator().manual_seed(0))].view_as(dots)
    m = quality.measures(noise, dots)
    assert m["hist_distance"] == 0  # same grey levels, no structure
    assert m["peak_energy"] < 0.15 and m["spectrum_distance"] > 0.3
    assert quality.peak_energy(lattice((48, 48), period=5.0), dots)[0] < 0.2  # other period: peaks elsewhere


def test_histogram_matching_makes_the_distance_about_zero(dots):
    img = torch.rand(40, 56, generator=torch.Generator().manual_seed(1)) ** 3
    assert quality.hist_distance(img, dots) > 20
    assert quality.hist_distance(histogram.match_histogram(img, dots), dots) < 0.5


# ---- losses -----------------------------------------------------------------------------------

def test_swd_is_zero_on_the_target_and_on_its_tiling(net, dots):
    with torch.no_grad():
        t = net.taps(dots[None, None], ["pool1", "pool2"])
        loss = losses.swd_loss([t])
        assert all(v.item() < 1e-6 for v in loss(t).values())
        # tiled twice each way: the same distribution with 4x the positions (border effects aside)
        tiled = net.taps(dots.repeat(2, 2)[None, None], ["pool1", "pool2"])
        noise = net.taps(torch.rand(1, 1, 96, 96, generator=torch.Generator().manual_seed(0)), ["pool1", "pool2"])
        near, far = loss(tiled), loss(noise)
        assert all(near[n].item() < 0.1 * far[n].item() for n in near)


def test_spectrum_loss_is_zero_on_the_target_and_resized_amplitude_keeps_the_variance(dots):
    assert spectrum.spectrum_loss([dots], dots.shape, "cpu")(dots[None, None]).item() < 1e-8
    amp = spectrum.target_amplitude(dots, (96, 64))
    assert (amp.square().sum() / (96 * 64) ** 2).item() == pytest.approx(dots.var(unbiased=False).item(), rel=0.1)
    noise = torch.rand(1, 1, 96, 64, generator=torch.Generator().manual_seed(0))
    assert spectrum.spectrum_loss([dots], (96, 64), "cpu")(noise).item() > 0.5


@pytest.fixture(scope="session")
def runs(net, dots):
    return {name: optimize.synthesize(net, [dots], None, gram_options(LAYERS, steps=15, **opts), seeds=[3],
                                      match=False)[0] for name, opts in [
        ("gram", {}), ("swd", {"loss": "swd"}), ("gram+spectrum", {"spectrum_weight": 1.0})]}


@pytest.mark.parametrize("name", ["gram", "swd", "gram+spectrum"])
def test_each_loss_lowers_its_objective_and_improves_the_measures(runs, dots, name):
    r = runs[name]
    assert r["message"] is None and r["curve"][-1] < 0.5 * r["curve"][0]
    assert ("spectrum" in r["layer_losses"]) == name.endswith("spectrum")
    start = optimize.init_image(dots, dots.shape, "shuffle", 3)
    before, after = quality.measures(start, dots), quality.measures(r["raw"], dots)
    assert after["spectrum_distance"] < before["spectrum_distance"]
    assert after["peak_energy"] > before["peak_energy"] + 0.05


def test_spectrum_constraint_keeps_more_of_the_lattice_than_gram_alone(runs, dots):
    gram, both = (quality.measures(runs[k]["raw"], dots) for k in ("gram", "gram+spectrum"))
    assert both["peak_energy"] > gram["peak_energy"]


# ---- coarse to fine ---------------------------------------------------------------------------

def test_levels_choice_and_periodic_upsampling():
    assert levels.auto_levels((1024, 1024), 224, 16, False) == 3 and levels.auto_levels((224, 224), 224, 16, False) == 1
    assert levels.level_steps(100, 3) == [100, 50, 25]
    assert "multiples of 64" in levels.levels_problem((96, 96), (64, 64), 3, 16, True, 16)
    assert "below 16 px" in levels.levels_problem((128, 128), (32, 32), 3, 16, False, 16)
    assert levels.levels_problem((64, 64), (64, 96), 9, 16, False, 32).endswith(
        "(output 0, target 0); at most 2 levels here")
    assert levels.levels_problem((64, 64), (64, 64), 2, 16, False, 32) is None
    img = lattice((32, 32), period=8.0, angle=0.0)  # exactly periodic in 32 px
    up = levels.upsample(img, (64, 64), tile=True)
    assert up.shape == (64, 64)
    assert torch.allclose(up, torch.roll(levels.upsample(torch.roll(img, 5, 1), (64, 64), True), -10, 1), atol=1e-5)


RSS_SCRIPT = """
import resource, sys, torch
import model
from texture.synthesis import optimize
from texture.synthesis.options import Options
torch.manual_seed(0)
net = model.TextureNet(3).eval()
target = torch.rand(32, 32)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
options = Options(layers={"pool1": 1.0, "pool2": 1.0}, levels=3, steps=4, tile=True, dtype="fp32", spectrum_weight=0,
                  refine_steps=0)
r = optimize.synthesize(net, [target], (128, 128), options)[0]
grow = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
print(tuple(r["image"].shape), [l["size"] for l in r["levels"]], [l["steps"] for l in r["levels"]], grow // 1024)
"""


def test_coarse_to_fine_gives_the_asked_size_within_a_memory_bound():
    out = subprocess.run([sys.executable, "-c", RSS_SCRIPT], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    line = out.stdout.strip().splitlines()[-1]
    assert line.startswith("(128, 128) [[32, 32], [64, 64], [128, 128]] [4, 2, 1] ")
    grow_mb = int(line.rsplit(" ", 1)[1])
    assert grow_mb < 256  # VGG-19 to pool2 on 128x128 in fp32 with its backward pass: tens of MB


def test_smallest_side_leaves_the_convolutions_after_the_last_pooling_two_pixels(net):
    assert taps.smallest_side(net, taps.parse_layers("relu1_1,relu5_1")) == 32
    assert taps.smallest_side(net, taps.parse_layers("original")) == 16  # ends at pool4
    assert taps.smallest_side(net, {"relu1_1": 1.0}) == 2


# ---- command line -----------------------------------------------------------------------------

def test_cli_writes_quality_and_the_run_report(net, tmp_path, capsys):
    from PIL import Image
    paths = []
    for i, period in enumerate((7.0, 9.0)):
        p = tmp_path / f"dots{i}-a-p001.png"
        Image.fromarray((lattice((48, 48), period=period) * 255).round().byte().numpy()).save(p)
        paths.append(str(p))
    ckpt = str(tmp_path / C.ckpt_name(1))
    C.save_checkpoint({"arch": "vgg19", "classes": ["dots0", "dots1", "x"], "model": net.state_dict()}, ckpt)
    out = tmp_path / "gen"
    gen.main([*paths, "--ckpt", ckpt, "--gen-dir", str(out), "--steps", "3", "--loss", "swd",
              "--spectrum-weight", "0.5", "--snapshot-every", "0", "--refine-steps", "0"])
    for name in ("dots0", "dots1"):
        r = json.load(open(out / name / "result.json"))
        assert set(r["quality"]) == {"hist_distance", "spectrum_distance", "peak_energy", "target_peak_share",
                                     "hf_excess", "lbp_distance", "patch_nn", "patch_cover", "copy_share"}
        assert r["quality"]["hist_distance"] < 0.5 and "spectrum" in r["layer_losses"]
        final = images.load_gray(str(out / name / "final.png")).float() / 255
        target = images.load_gray(str(out / name / "target.png")).float() / 255
        # measured as saved (8-bit): the files read back give the recorded figures exactly
        assert r["hist_distance"] == r["quality"]["hist_distance"] == quality.hist_distance(final, target)
        assert r["quality"] == pytest.approx(quality.measures(final, target), rel=1e-6)
    rep = json.load(open(out / "report.json"))
    assert rep["summary"]["targets"] == rep["summary"]["finished"] == 2
    assert [t["name"] for t in rep["targets"]] == ["dots0", "dots1"]
    assert rep["summary"]["mean"]["peak_energy"] == pytest.approx(
        sum(t["peak_energy"] for t in rep["targets"]) / 2)
    table = capsys.readouterr().out
    assert "spectrum_distance" in table and "copy_share" in table and "\nmean " in table
    with pytest.raises(SystemExit, match="1 of 1 target"):
        gen.main([paths[0], "--ckpt", ckpt, "--gen-dir", str(out), "--steps", "1", "--levels", "2"])
    # 24 px: pool4 would leave 1 px for conv5_1's padding
    assert "--levels 2: the coarsest level would be below 32 px" in capsys.readouterr().err
