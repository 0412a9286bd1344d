"""Shared fixtures: tiny datasets made on the fly in the Kylberg layout (nothing is downloaded), a
classifier trained on one, and texnet.py's tiny settings."""
import copy
import glob
import importlib.util
import os
import types

import pytest

import model
from texture.synthesis.options import Options

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# texnet.py train at a tiny generator (3 scales, 4 channels) on 32 px crops, shallow taps, no snapshots
TEXNET_TINY = ["--image-size", "32", "--texnet-size", "32", "--texnet-scales", "3", "--texnet-width", "4",
               "--texnet-noise", "2", "--texnet-batch", "2", "--texnet-calibrate", "64", "--layers",
               "relu1_1,relu2_1,relu3_1", "--dtype", "fp32", "--texnet-snapshot-every", "0"]


def load_script(name):
    """A script of the repository's root as a module named `<name>_script`: `import test` would find
    the standard library's package of that name instead of test.py."""
    spec = importlib.util.spec_from_file_location(f"{name}_script", os.path.join(ROOT, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def gram_options(layers, **kw):
    """Gatys' Gram loss alone on `layers`, in fp32, one level, without the spectrum term and the
    refinement: the fixed recipe the tests of the loops start from (`kw` overrides any field)."""
    return Options(**{"layers": layers, "spectrum_weight": 0.0, "levels": 1, "refine_steps": 0, "polish_steps": 0,
                      "gcd_weight": 1.0, "occurrence_hold": 0, "dtype": "fp32", **kw})


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    """A tiny procedural demo set: 3 classes x 8 patches (2 per sample a..d) of 48 px. Returns its folder."""
    from texture.data import procedural

    out = tmp_path_factory.mktemp("demo") / "demo"
    procedural.make_demo(str(out), classes=3, patches=8, size=48, seed=0)
    return str(out)


@pytest.fixture(scope="session")
def trained_ckpt(demo_data, tmp_path_factory):
    """TextureNet trained for 3 epochs on demo_data at 32 px, keeping 2 checkpoints plus best.pt.

    Returns the checkpoint folder; the logs are in the sibling folder `log`.
    """
    import train

    out = tmp_path_factory.mktemp("trained")
    train.main(["--data-dir", demo_data, "--image-size", "32", "--epochs", "3", "--batch-size", "4",
                "--keep", "2", "--ckpt-dir", str(out / "ckpt"), "--log-dir", str(out / "log")])
    return str(out / "ckpt")


@pytest.fixture(scope="session")
def firsts(demo_data):
    """The first patch of sample a of every demo class, sorted."""
    return sorted(glob.glob(os.path.join(demo_data, "*", "*-a-p001.png")))


@pytest.fixture(scope="module")
def quick_vgg():
    """torchvision's VGG initialises a 120M-parameter classifier head that TextureNet drops (seconds
    per network); with this fixture each architecture is built once and its convolutional part copied."""
    built, archs = {}, dict(model.ARCHS)

    def features_of(arch):
        def build(weights=None):
            if arch not in built:
                built[arch] = archs[arch](weights=None).features
            return types.SimpleNamespace(features=copy.deepcopy(built[arch]))
        return build
    with pytest.MonkeyPatch.context() as m:
        m.setattr(model, "ARCHS", {a: features_of(a) for a in archs})
        yield


def texnet_train(targets, out, *extra, ckpt=None):
    """texnet.py train at TEXNET_TINY into `out`, with the classifier `ckpt` or random weights."""
    import texnet
    backbone = ["--ckpt", ckpt] if ckpt else ["--backbone", "random"]
    texnet.main(["train", *targets, *TEXNET_TINY, *backbone, "--texnet-dir", str(out), *map(str, extra)])


def texnet_sample(path, out, *extra):
    """texnet.py sample of the generator `path` into `out`, in fp32."""
    import texnet
    return texnet.main(["sample", str(path), "--sample-dir", str(out), "--dtype", "fp32", *map(str, extra)])
