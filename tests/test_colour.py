"""Colour synthesis (texture/synthesis/colour.py) and colour through gen.py and texnet.py, on tiny
procedural colour textures: dots keep their colour, a grey target gives a grey output, --colour grey,
--tile, --size, coarse to fine, a mixed batch, texnet train and sample, the ImageNet network's RGB
first convolution."""
import dataclasses
import json
import os

import numpy as np
import pytest
import torch
import torchvision
from conftest import gram_options
from PIL import Image

import gen
import model
import texnet
from texture.data import colour as data
from texture.measures import colour as measures
from texture.networks import backbones
from texture.run import memory
from texture.synthesis import chroma, colour
from texture.synthesis.optimize import synthesize
from texture.synthesis.taps import parse_layers

SIZE = 48
FAST = ["--backbone", "random", "--dtype", "fp32", "--device", "cpu", "--snapshot-every", "0"]


def rgb(family, seed, size=SIZE):
    return torch.from_numpy(data.colour_texture(family, size, seed)).permute(2, 0, 1).float() / 255


def foreign_share(img, target, levels=60):
    """Share of the image's pixels farther than `levels` (RGB, 8-bit) from every colour of the target."""
    a, b = (x.flatten(1).T * 255 for x in (img, target))
    return (torch.cdist(a, b).min(1).values > levels).float().mean().item()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("colour")
    Image.fromarray(data.colour_texture("dots", SIZE, 0)).save(d / "dots.png")
    Image.fromarray(data.colour_texture("tiles", SIZE, 0)).save(d / "tiles.png")
    grey = data.colour_texture("stripes", SIZE, 0)[..., 0]
    Image.fromarray(grey).save(d / "grey.png")
    os.makedirs(d / "rgb")
    Image.fromarray(np.stack([grey] * 3, -1)).save(d / "rgb" / "grey.png")  # an RGB file without colour
    return d


@pytest.fixture(scope="module")
def net():
    return backbones.random_net("vgg19_bn", 0).eval().requires_grad_(False)


# dots' default (its luminance synthesised, then coloured), and (b1)
@pytest.mark.parametrize("chroma,share", [("none", 0.7), ("relu1_1,relu2_1", 1.0)])
def test_red_dots_stay_red_on_their_blue_ground(net, chroma, share):
    target = rgb("dots", 0)
    o = gram_options(parse_layers("blocks"), spectrum_weight=0.3, chroma_layers=parse_layers(chroma), chroma_share=share)
    r = synthesize(net, [target], None, dataclasses.replace(o, steps=60), seeds=[1])[0]
    assert r["image"].shape == (3, SIZE, SIZE)
    assert foreign_share(r["raw"], target) < 0.1  # few purple or dark pixels before the histogram
    assert foreign_share(r["image"], target) < 0.02
    def red(x):
        return ((x[0] > 0.6) & (x[2] < 0.4)).float().mean().item()
    assert 0.6 < red(r["image"]) / red(target) < 1.6
    assert measures.colourfulness(r["image"], target) > 0.8


def test_colours_of_one_luminance_meet_the_network_together_and_run_apart(files, tmp_path, monkeypatch, capsys):
    """The strongest principal axis carries nearly all of red dots on blue, about half of four-colour
    tiles: the tiles' three channels meet at --chroma-layers, in a batch of their own."""
    grey = torch.from_numpy(np.array(Image.open(files / "rgb" / "grey.png"))).permute(2, 0, 1).float() / 255
    shares = {n: colour.first_axis_share(x) for n, x in (("dots", rgb("dots", 0)), ("tiles", rgb("tiles", 0)),
                                                           ("grey", grey))}
    assert shares["dots"] > 0.95 and shares["tiles"] < 0.6 and shares["grey"] == pytest.approx(1.0)
    assert colour.joint([rgb("dots", 0)], ["relu1_1"], 0.7) == [] and colour.joint([rgb("tiles", 0)], ["relu1_1"], 0.7)
    seen, features, coloured, colourise = [], colour.features, [], chroma.colourise
    monkeypatch.setattr(colour, "features", lambda net, y, every, chroma: seen.append((len(y), tuple(chroma))) or
                        features(net, y, every, chroma))
    monkeypatch.setattr(chroma, "colourise", lambda y, t, *a: coloured.append(t.shape) or colourise(y, t, *a))
    gen.main([str(files / "dots.png"), str(files / "tiles.png"), *FAST, "--steps", "2", "--refine-steps", "0",
              "--gen-dir", str(tmp_path / "a")])
    assert set(seen) == {(1, ("relu1_1", "relu2_1"))}  # the tiles alone, in colour
    assert coloured == [(3, SIZE, SIZE)] * 2  # the dots in luminance, coloured after (image and raw)
    seen.clear(), coloured.clear()
    gen.main([str(files / "tiles.png"), *FAST, "--steps", "2", "--refine-steps", "0", "--chroma-share", "0",
              "--gen-dir", str(tmp_path / "b")])
    assert not seen and len(coloured) == 2
    with pytest.raises(SystemExit):
        gen.main([str(files / "tiles.png"), "--chroma-share", "1.5"])
    assert "argument --chroma-share: must be at most 1, got 1.5" in capsys.readouterr().err
    for flags, why in ((["--colour", "grey"], "--chroma-share applies to colour targets only, not with --colour grey"),
                       (["--chroma-layers", "none"], "--chroma-share has no effect with --chroma-layers none")):
        with pytest.raises(SystemExit):
            gen.main([str(files / "tiles.png"), *FAST, "--chroma-share", "0.5", *flags])
        assert why in capsys.readouterr().err


def test_a_colour_outputs_luminance_is_the_grey_synthesis_of_its_targets_luminance(net):
    target = rgb("dots", 0)
    o = gram_options(parse_layers("blocks"), spectrum_weight=0.3, steps=20)
    out = synthesize(net, [target], None, o, seeds=[1])[0]
    grey = synthesize(net, [measures.luminance(target)], None, o, seeds=[1])[0]
    for kind in ("image", "raw"):
        gap = (measures.luminance(out[kind]) - grey[kind]).abs() * 255  # apart where a colour was clipped
        assert out[kind].shape == (3, SIZE, SIZE) and gap.median() < 0.01 and (gap > 1).float().mean() < 0.05


@pytest.mark.parametrize("pool", [None, 400])  # every target patch a candidate, or 400 drawn of them
def test_colourise_gives_a_target_its_own_colours_back_from_its_luminance(pool):
    target = rgb("stripes", 2)
    out = chroma.colourise(measures.luminance(target), target, pool_size=pool)
    assert (out - target).abs().mean() * 255 < (2 if pool is None else 6)
    assert measures.colourfulness(out, target) > 0.95 and foreign_share(out, target) < 0.02
    basis = chroma.chroma_basis()
    assert torch.allclose(basis @ torch.tensor(measures.LUMA), torch.zeros(2), atol=1e-6)


def test_match_colours_gives_the_target_colours_and_moves_a_texture_that_has_them_little():
    target, noise = rgb("tiles", 0), torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    out = colour.match_colours(noise, target)
    assert measures.colour_hist_distance(out, target) < 1.5 < measures.colour_hist_distance(noise, target)
    assert foreign_share(out, target) < 0.02
    whole = rgb("dots", 0, 2 * SIZE)  # another window of the same texture: its colours in nearly the same shares
    other = whole[:, SIZE:, SIZE:]
    assert (colour.match_colours(other, whole[:, :SIZE, :SIZE]) - other).abs().mean() * 255 < 8


def test_colour_spectrum_term_is_zero_on_a_shifted_target_and_sees_swapped_channels():
    target = rgb("stripes", 1)
    space = colour.Space([target])
    y = space.decorrelate(target[None])
    loss = colour.spectrum_loss([y[0]], (SIZE, SIZE), "cpu")
    assert loss(torch.roll(y, (5, 9), (2, 3))).item() < 1e-3
    swapped = space.decorrelate(target[[2, 1, 0]][None])
    assert loss(swapped).item() > 0.05


def test_principal_axes_are_orthonormal_and_the_first_grows_with_brightness():
    mean, axes = colour.principal_axes(rgb("tiles", 2))
    assert torch.allclose(axes @ axes.T, torch.eye(3), atol=1e-5) and axes[0].sum() > 0


def test_grey_target_gives_a_grey_png_and_an_rgb_file_without_colour_the_same(files, tmp_path):
    for name, path in (("l", files / "grey.png"), ("rgb", files / "rgb" / "grey.png")):  # same name: same seed
        gen.main([str(path), *FAST, "--steps", "4", "--refine-steps", "0", "--gen-dir", str(tmp_path / name)])
    a, b = (Image.open(tmp_path / n / "grey" / "final.png") for n in ("l", "rgb"))
    assert a.mode == b.mode == "L" and np.array_equal(np.asarray(a), np.asarray(b))


def test_colour_auto_gives_rgb_and_colour_grey_gives_grey(files, tmp_path):
    gen.main([str(files / "dots.png"), *FAST, "--steps", "4", "--refine-steps", "2", "--polish-steps", "1",
              "--snapshot-every", "3", "--gen-dir", str(tmp_path / "auto")])
    for name in ("final.png", "snapshot_00003.png", "snapshot_00006.png"):  # snapshots coloured as they run
        out = Image.open(tmp_path / "auto" / "dots" / name)
        assert out.mode == "RGB" and out.size == (SIZE, SIZE)
    r = json.load(open(tmp_path / "auto" / "dots" / "result.json"))
    assert r["colour"] and "colourfulness" in r["quality"] and r["status"] == "ok"
    gen.main([str(files / "dots.png"), *FAST, "--steps", "4", "--refine-steps", "0", "--colour", "grey",
              "--gen-dir", str(tmp_path / "grey")])
    assert Image.open(tmp_path / "grey" / "dots" / "final.png").mode == "L"
    with pytest.raises(SystemExit):
        gen.main([str(files / "dots.png"), *FAST, "--colour", "grey", "--chroma-layers", "relu1_1"])


def test_mixed_batch_tile_size_and_coarse_to_fine_in_colour(files, tmp_path, monkeypatch, capsys):
    args = [str(files / "dots.png"), str(files / "grey.png"), *FAST, "--steps", "4", "--size", "64", "64",
            "--tile", "--levels", "2", "--layers", "relu1_1,relu2_1,relu3_1"]
    # the dots, synthesised in luminance, run in one batch with the grey target; memory that two grey
    # outputs of this size fit in and one colour and one grey do not: the batch is refused whole (the finer
    # level is refined too, so the memory of a refined output is what counts)
    grey_need, colour_need = (memory.synthesis(2, (64, 64), True, c) for c in (False, True))
    with monkeypatch.context() as m:
        m.setattr(memory, "available", lambda device: (grey_need + colour_need) / 2)
        with pytest.raises(SystemExit):
            gen.main([*args, "--gen-dir", str(tmp_path / "small")])
    assert "dots.png: --size 64 64: 2 output(s) of 64x64 at once, about" in capsys.readouterr().err
    assert not any((tmp_path / "small" / n).exists() for n in ("dots", "grey"))
    with monkeypatch.context() as m:  # enough for the two unrefined, not for the refined finer level
        m.setattr(memory, "available", lambda device: (memory.synthesis(2, (64, 64), False, True) + colour_need) / 2)
        with pytest.raises(SystemExit):
            gen.main([*args, "--gen-dir", str(tmp_path / "small")])
    err = capsys.readouterr().err  # and the way out: no refinement at the full-size level
    assert "dots.png: --size 64 64: 2 output(s) of 64x64 at once, about" in err
    assert f"(about {memory.synthesis(2, (64, 64), False, True) / memory.GB:.1f} GB with --fine-refine-steps 0)" in err
    gen.main([*args, "--gen-dir", str(tmp_path)])
    dots, grey = (np.asarray(Image.open(tmp_path / n / "final.png"), dtype=np.float64) for n in ("dots", "grey"))
    assert dots.shape == (64, 64, 3) and grey.shape == (64, 64)
    r = json.load(open(tmp_path / "dots" / "result.json"))
    assert [lv["size"] for lv in r["levels"]] == [[32, 32], [64, 64]]
    # tiles: the jump across the wrap-around is no larger than between neighbouring rows inside
    inside = np.abs(np.diff(dots, axis=0)).mean()
    assert np.abs(dots[0] - dots[-1]).mean() < 2 * inside


def test_texnet_trains_and_samples_a_colour_generator(files, tmp_path):
    texnet.main(["train", str(files / "dots.png"), "--backbone", "random", "--texnet-steps", "2", "--texnet-size", "32",
                 "--texnet-dir", str(tmp_path / "tn"), "--texnet-snapshot-every", "0", "--device", "cpu",
                 "--dtype", "fp32", "--image-size", "32"])
    texnet.main(["sample", str(tmp_path / "tn" / "dots" / "texnet.pt"), "--size", "64", "64", "--sample-tile", "32",
                 "--sample-dir", str(tmp_path / "s"), "--device", "cpu", "--dtype", "fp32"])
    img = Image.open(tmp_path / "s" / "dots" / "64x64_seed0_0.png")
    assert img.mode == "RGB" and img.size == (64, 64)
    assert "colourfulness" in json.load(open(tmp_path / "s" / "dots" / "64x64_seed0_0.json"))["quality"]


def test_imagenet_colour_goes_through_its_rgb_first_convolution(tmp_path):
    vgg = torchvision.models.vgg19(weights=None)  # random RGB weights: nothing is downloaded
    torch.save(vgg.state_dict(), tmp_path / "vgg.pth")
    net = model.frozen(backbones.imagenet_net(str(tmp_path / "vgg.pth")), "avg", "reflect")
    x = rgb("dots", 3)[None]
    view = colour.View(net, [x[0]], ["relu1_1"], {})
    mean = torch.tensor(backbones.IMAGENET_MEAN)[None, :, None, None]
    std = torch.tensor(backbones.IMAGENET_STD)[None, :, None, None]
    conv = vgg.features[0]
    conv.padding_mode = "reflect"
    want = torch.relu(conv((x - mean) / std))
    with torch.no_grad():
        assert torch.allclose(view.feats(x, view.channels(x))["relu1_1"], want, atol=1e-4)


def test_the_time_budget_covers_a_colour_batch_with_its_refinement(net):
    """A budget spent within the first iterations: both targets stop, in colour, at their size."""
    targets = [rgb("dots", 0), rgb("stripes", 1)]
    o = gram_options(parse_layers("relu1_1,relu2_1"), spectrum_weight=0.3, steps=500, refine_steps=500,
                     polish_steps=500, time_budget=1.0)
    out = synthesize(net, targets, None, o, seeds=[0, 1])
    for r, t in zip(out, targets):
        assert r["image"].shape == t.shape and r["steps"] < 1500 and measures.colourfulness(r["image"], t) > 0.5
