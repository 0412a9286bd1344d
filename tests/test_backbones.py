"""gen.py --backbone: random weights, ImageNet VGG-19 from a local weights file, the grey fold."""
import glob
import json
import os

import pytest
import torch
import torch.nn.functional as F
import torchvision

import gen
import model


@pytest.fixture(scope="session")
def vgg(tmp_path_factory):
    """A randomly initialised torchvision VGG-19 and its state_dict saved as a weights file."""
    torch.manual_seed(0)
    net = torchvision.models.vgg19(weights=None).eval()
    path = str(tmp_path_factory.mktemp("weights") / "vgg19.pth")
    torch.save(net.state_dict(), path)
    return net, path


@pytest.fixture(scope="session")
def firsts(demo_data):
    return sorted(glob.glob(os.path.join(demo_data, "*", "*-a-p001.png")))


@pytest.fixture(scope="session")
def ckpt(demo_data, tmp_path_factory):
    """A checkpoint of an untrained classifier: enough for the verdict to run."""
    classes = sorted(d for d in os.listdir(demo_data) if os.path.isdir(os.path.join(demo_data, d)))
    path = str(tmp_path_factory.mktemp("ckpt") / model.ckpt_name(1))
    model.save_checkpoint({"arch": "vgg19_bn", "classes": classes, "model": model.TextureNet(len(classes), "vgg19_bn")
                           .state_dict()}, path)
    return path


def normalised_rgb(g):
    mean = torch.tensor(gen.IMAGENET_MEAN)[None, :, None, None]
    std = torch.tensor(gen.IMAGENET_STD)[None, :, None, None]
    return (g.repeat(1, 3, 1, 1) - mean) / std


@pytest.fixture(scope="session")
def grey(vgg):
    return gen.imagenet_net(vgg[1]).eval()


def test_grey_fold_equals_the_rgb_network_on_normalised_input(vgg, grey):
    rgb_net = vgg[0]
    torch.manual_seed(1)
    g = torch.rand(2, 1, 40, 40)
    with torch.no_grad():
        conv = rgb_net.features[0]
        # zero padding: equal away from the border (the RGB net pads with the mean grey, ours with black)
        folded = gen.fold_rgb(conv)(g)
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
    a, b = gen.random_net("vgg19_bn", 3), gen.random_net("vgg19_bn", 3)
    assert "bn1_1" in a.names  # the trained default architecture, batch norm layers named too
    assert {"conv1_1", "relu1_1", "pool1", "pool2", "pool3", "pool4"} <= set(grey.names) <= set(a.names)
    assert torch.equal(a.features[0].weight, b.features[0].weight)  # seeded: reproducible


def read_results(out):
    return {os.path.basename(os.path.dirname(p)): json.load(open(p)) for p in glob.glob(str(out / "*" / "result.json"))}


def test_random_backbone_runs_without_a_checkpoint_and_skips_the_verdict(firsts, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no asset/train/ckpt here
    gen.main([firsts[0], firsts[1], "--backbone", "random", "--steps", "3", "--gen-dir", "out"])
    results = read_results(tmp_path / "out")
    assert len(results) == 2
    for r in results.values():
        assert r["status"] == "ok" and r["backbone"] == "random" and r["checkpoint"] is None
        assert r["verdict"] is None and "no trained checkpoint" in r["verdict_skipped"]
        assert r["loss"] < 0.9 * r["curve"][0]
    assert glob.glob(str(tmp_path / "out" / "*" / "final.png"))


def test_imagenet_backbone_from_a_weights_file_with_the_classifier_verdict(ckpt, vgg, firsts, tmp_path):
    out = tmp_path / "out"
    gen.main([firsts[0], "--backbone", "imagenet", "--backbone-weights", vgg[1], "--ckpt", ckpt,
              "--steps", "5", "--gen-dir", str(out)])
    [r] = read_results(out).values()
    assert r["status"] == "ok" and r["backbone"] == "imagenet" and r["checkpoint"] == ckpt
    assert r["verdict"]["target_class"] == r["label"] and "verdict_skipped" not in r
    assert r["loss"] < 0.9 * r["curve"][0] and (out / r["label"] / "final.png").exists()


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
