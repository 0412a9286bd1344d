"""gen.py --backbone: random weights, ImageNet VGG-19 from a local weights file, the grey fold."""
import glob
import json
import os
import re
import urllib.error

import pytest
import torch
import torchvision

import gen
import model
from hyperparams import Hyperparams
from texture.data import images
from texture.measures import quality
from texture.networks import backbones
from texture.networks import checkpoints as C
from texture.synthesis import losses, optimize, taps
from texture.synthesis.options import Options

LAYERS = taps.parse_layers(Hyperparams.layers)  # the default taps


@pytest.fixture(scope="session")
def vgg(tmp_path_factory):
    """A randomly initialised torchvision VGG-19 and its state_dict saved as a weights file."""
    torch.manual_seed(0)
    net = torchvision.models.vgg19(weights=None).eval()
    path = str(tmp_path_factory.mktemp("weights") / "vgg19.pth")
    torch.save(net.state_dict(), path)
    return net, path


@pytest.fixture(scope="session")
def ckpt(demo_data, tmp_path_factory):
    """A checkpoint of an untrained classifier: enough for the verdict to run."""
    classes = sorted(d for d in os.listdir(demo_data) if os.path.isdir(os.path.join(demo_data, d)))
    path = str(tmp_path_factory.mktemp("ckpt") / C.ckpt_name(1))
    C.save_checkpoint({"arch": "vgg19_bn", "classes": classes, "model": model.TextureNet(len(classes), "vgg19_bn")
                           .state_dict()}, path)
    return path


def load_grey(path):
    return images.load_gray(path).float() / 255


def normalised_rgb(g):
    mean = torch.tensor(backbones.IMAGENET_MEAN)[None, :, None, None]
    std = torch.tensor(backbones.IMAGENET_STD)[None, :, None, None]
    return (g.repeat(1, 3, 1, 1) - mean) / std


@pytest.fixture(scope="session")
def grey(vgg):
    return backbones.imagenet_net(vgg[1]).eval()


def test_grey_fold_equals_the_rgb_network_on_normalised_input(vgg, grey):
    rgb_net = vgg[0]
    torch.manual_seed(1)
    g = torch.rand(2, 1, 40, 40)
    with torch.no_grad():
        conv = rgb_net.features[0]
        # zero padding: equal away from the border (the RGB net pads with the mean grey, ours with black)
        folded = backbones.fold_rgb(conv)(g)
        assert torch.allclose(folded[..., 1:-1, 1:-1], conv(normalised_rgb(g))[..., 1:-1, 1:-1], atol=1e-4)
        assert not torch.allclose(folded, conv(normalised_rgb(g)), atol=1e-3)
        # reflect padding (what synthesis uses): equal everywhere, through the whole net to pool3
        try:
            for net in (rgb_net, grey):
                model.set_padding(net, "reflect")
            ref = normalised_rgb(g)
            for m in rgb_net.features[:19]:
                ref = m(ref)
            out = grey.taps(g, ["pool3"])["pool3"]
        finally:
            for net in (rgb_net, grey):
                model.set_padding(net, "zeros")
        assert grey.names[18] == "pool3" and out.shape == ref.shape
        assert torch.allclose(out, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_backbones_have_the_classifier_tap_names(grey):
    a, b = backbones.random_net("vgg19_bn", 3), backbones.random_net("vgg19_bn", 3)
    assert "bn1_1" in a.names  # the trained default architecture, batch norm layers named too
    assert {"conv1_1", "relu1_1", "pool1", "pool2", "pool3", "pool4"} <= set(grey.names) <= set(a.names)
    assert torch.equal(a.features[0].weight, b.features[0].weight)  # seeded: reproducible


def read_results(out):
    return {os.path.basename(os.path.dirname(p)): json.load(open(p)) for p in glob.glob(str(out / "*" / "result.json"))}


def test_random_backbone_runs_without_a_checkpoint_and_skips_the_verdict(firsts, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no asset/train/ckpt here
    gen.main([firsts[0], firsts[1], "--backbone", "random", "--steps", "3", "--refine-steps", "0", "--gen-dir", "out"])
    results = read_results(tmp_path / "out")
    assert len(results) == 2
    for r in results.values():
        assert r["status"] == "ok" and r["backbone"] == "random" and r["checkpoint"] is None
        assert r["verdict"] is None and "no trained checkpoint" in r["verdict_skipped"]
        assert r["loss"] < 0.9 * r["curve"][0] and max(r["silent_channels"].values()) < backbones.SILENT_WARNING
    assert glob.glob(str(tmp_path / "out" / "*" / "final.png"))


def test_imagenet_backbone_from_a_weights_file_with_the_classifier_verdict(ckpt, vgg, firsts, tmp_path):
    out = tmp_path / "out"
    gen.main([firsts[0], "--backbone", "imagenet", "--backbone-weights", vgg[1], "--ckpt", ckpt,
              "--steps", "5", "--refine-steps", "0", "--gen-dir", str(out)])
    [r] = read_results(out).values()
    assert r["status"] == "ok" and r["backbone"] == "imagenet" and r["checkpoint"] == ckpt
    assert r["verdict"]["target_class"] == r["label"] and "verdict_skipped" not in r
    assert r["loss"] < 0.9 * r["curve"][0] and (out / r["label"] / "final.png").exists()


def test_imagenet_weights_that_cannot_be_fetched_are_one_line(firsts, tmp_path, monkeypatch):
    """Offline, without --backbone-weights: torchvision's download fails; the message says what to do."""
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")
    monkeypatch.setattr(torchvision.models.VGG19_Weights, "get_state_dict", offline)
    url = torchvision.models.VGG19_Weights.IMAGENET1K_V1.url
    with pytest.raises(SystemExit) as e:
        gen.main([firsts[0], "--backbone", "imagenet", "--gen-dir", str(tmp_path / "g")])
    assert str(e.value) == ("--backbone imagenet: cannot fetch torchvision's VGG-19 weights (URLError: <urlopen error "
                            f"[Errno -2] Name or service not known>); download {url} and pass it as "
                            "--backbone-weights FILE")
    assert not (tmp_path / "g").exists()


def test_missing_or_corrupt_weights_file_is_a_one_line_error_naming_it(firsts, tmp_path):
    junk, foreign = tmp_path / "junk.pth", tmp_path / "foreign.pth"
    junk.write_bytes(b"\x80\x02not a checkpoint")
    torch.save({"conv.weight": torch.zeros(2)}, foreign)
    for path in (tmp_path / "missing.pth", junk, foreign):
        with pytest.raises(SystemExit) as e:
            gen.main([firsts[0], "--backbone", "imagenet", "--backbone-weights", str(path), "--gen-dir",
                      str(tmp_path / "g")])
        msg = str(e.value)
        assert msg.startswith(f"--backbone-weights {path}: ") and "\n" not in msg
    with pytest.raises(SystemExit, match="missing.pt: checkpoint not found"):  # a --ckpt given is required
        gen.main([firsts[0], "--backbone", "random", "--ckpt", str(tmp_path / "missing.pt")])


def half_contrast_loss(net, targets):
    """Per tap, the mean relative Gram loss of a half-contrast copy of each target against the target:
    how much the loss sees a flat, low-contrast texture as wrong (synthesis settings: avg pool, reflect)."""
    probe = model.frozen(net, "avg", "reflect", keep=LAYERS)
    total = dict.fromkeys(LAYERS, 0.0)
    with torch.no_grad():
        for t in targets:
            loss = losses.gram_loss([probe.taps(t[None, None], list(LAYERS))])
            flat = t.mean() + 0.5 * (t - t.mean())
            for name, v in loss(probe.taps(flat[None, None], list(LAYERS))).items():
                total[name] += v.item() / len(targets)
    return total



def test_trained_recipe_gives_a_backbone_that_sees_contrast_and_keeps_its_channels(trained_ckpt, firsts):
    """What makes the trained classifier the better backbone (docs/backbones.md): batch norm keeps its
    channels alive and centred, so its Gram loss sees contrast; random weights barely do (their Gram
    is dominated by the channel means)."""
    path = C.latest_checkpoint(trained_ckpt)
    trained = C.model_from_checkpoint(C.load_checkpoint(path), path)
    targets = [load_grey(f) for f in firsts]
    for quiet in backbones.silent_channels(trained, targets, LAYERS, "avg", "reflect"):
        assert max(quiet.values()) < backbones.SILENT_WARNING
    seen, seen_random = half_contrast_loss(trained, targets), half_contrast_loss(backbones.random_net(trained.arch, 0), targets)
    for name in LAYERS:
        assert seen[name] > 3 * seen_random[name], (name, seen, seen_random)


def test_trained_backbone_gives_closer_grey_levels_than_random_weights(trained_ckpt, firsts):
    """The measured comparison (docs/backbones.md) in small: under gen.py's defaults the trained
    classifier's textures, before histogram matching, are closer to the target's grey levels."""
    path = C.latest_checkpoint(trained_ckpt)
    trained = C.model_from_checkpoint(C.load_checkpoint(path), path)
    targets = [load_grey(f) for f in firsts]
    options = Options(dtype="fp32", levels=1, steps=40, refine_steps=0)
    hist = {}
    for name, net in [("trained", trained), ("random", backbones.random_net(trained.arch, 0))]:
        out = optimize.synthesize(net, targets, None, options, seeds=[0] * len(targets))
        hist[name] = sum(quality.hist_distance(r["raw"], t) for r, t in zip(out, targets)) / len(targets)
    assert hist["trained"] < hist["random"] / 1.5, hist


def test_a_network_with_silent_taps_is_flagged(ckpt, firsts, tmp_path, capsys):
    broken = C.model_from_checkpoint(C.load_checkpoint(ckpt), ckpt)
    with torch.no_grad():
        for name, m in zip(broken.names, broken.features):
            if name.startswith(("bn3", "bn4")):
                m.bias[len(m.bias) // 10:] = -100.0  # 90% of the ReLUs after it die, as in a badly trained net
    path = str(tmp_path / "silent.pt")
    C.save_checkpoint({**C.load_checkpoint(ckpt), "model": broken.state_dict()}, path)
    gen.main([firsts[0], "--ckpt", path, "--steps", "1", "--refine-steps", "0", "--gen-dir", str(tmp_path / "g")])
    [r] = read_results(tmp_path / "g").values()
    quiet = r["silent_channels"]  # default taps relu1_1..relu5_1
    assert r["status"] == "ok" and quiet["relu1_1"] < backbones.SILENT_WARNING <= min(quiet["relu3_1"], quiet["relu4_1"])
    assert re.search(r"\d+% of the relu[345]_1 channels of the trained network are silent", capsys.readouterr().err)
